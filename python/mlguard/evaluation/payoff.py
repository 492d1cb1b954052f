"""The protocol's tables from its cells (evaluation/protocol.py): the owner's embedding
costs, the payoff matrix over schemes x attacks, the best attack per scheme, wall times, and
the Pareto plot (stealing loss against -log10 p), as WRT's paper reports them.

An attack removes a mark in a seed when the attacked model is not detected and its test
accuracy fell by less than `max_loss` (a fraction: 0.05 is 5 points)."""

from __future__ import annotations

import csv
import html
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, median


def removed(cell: dict, max_loss: float) -> bool:
    return not cell["detected"] and cell["accuracy_loss"] < max_loss


def tables(cells: list[dict], max_loss: float, alpha: float) -> dict:
    """{"owner": rows, "payoff": {scheme: {attack: summary}}, "best": rows, "times": rows,
    "failed": cells that raised, "not_embedded": owner rows whose marked model is itself
    not detected (neither counted as removed or survived: the mark was never there)}."""
    failed = [c for c in cells if "error" in c]
    cells = [c for c in cells if "error" not in c]
    owner = [c for c in cells if c["attack"] == "none"]
    not_embedded = [c for c in owner if not c["detected"]]
    unmarked = {(c["scheme"], c["seed"]) for c in not_embedded}
    attacked = [c for c in cells if c["attack"] != "none"
                and (c["scheme"], c["seed"]) not in unmarked]
    by = defaultdict(list)
    for c in attacked:
        by[c["scheme"], _name(c)].append(c)
    payoff: dict = defaultdict(dict)
    for (scheme, attack), group in by.items():
        payoff[scheme][attack] = {
            "removed": sum(removed(c, max_loss) for c in group), "seeds": len(group),
            "median_loss": median(c["accuracy_loss"] for c in group),
            "median_log10_p": median(c["log10_p"] for c in group)}
    best = []
    for scheme, row in payoff.items():
        winners = [(s["removed"] / s["seeds"], -s["median_loss"], a) for a, s in row.items()
                   if s["removed"]]
        if winners:
            share, neg_loss, attack = max(winners)
            best.append({"scheme": scheme, "attack": attack, "removed_share": share,
                         "median_loss": -neg_loss})
        else:
            best.append({"scheme": scheme, "attack": None, "removed_share": 0.0,
                         "median_loss": None})
    times: dict = defaultdict(list)
    for c in attacked:
        times[_name(c)].append(c["seconds"])
    return {"owner": owner, "payoff": dict(payoff), "best": best,
            "times": [{"attack": a, "mean_seconds": mean(t), "runs": len(t)}
                      for a, t in times.items()],
            "max_loss": max_loss, "alpha": alpha, "failed": failed,
            "not_embedded": not_embedded}


def _name(cell: dict) -> str:
    return f"{cell['attack']}({cell['params']})" if cell["params"] else cell["attack"]


def to_markdown(t: dict) -> str:
    pts = t["max_loss"] * 100
    out = [f"Removed = not detected at alpha {t['alpha']:g} with a test-accuracy loss under "
           f"{pts:g} points; seeds removed / seeds run.", "",
           "**Owner models** (embedding cost = the clean twin's accuracy - the marked model's; "
           "the twin is fine-tuned as the marked model, without the mark)", "",
           "| scheme | seed | clean twin acc | marked acc | cost (points) | marked read | p | "
           "clean twin read | twin p |", "|---|---:|---:|---:|---:|---|---:|---|---:|"]
    for c in t["owner"]:
        twin = c["clean_twin"]
        out.append(f"| {c['scheme']} | {c['seed']} | {c['clean_accuracy']:.2%} | "
                   f"{c['accuracy']:.2%} | {c['embedding_cost'] * 100:.2f} | "
                   f"{c['matches']}/{c['total']} | {c['p_value']:.2g} | "
                   f"{twin['matches']}/{twin['total']} | {twin['p_value']:.2g} |")
    if t["not_embedded"]:
        out += ["", "**Not embedded**: the marked model itself is not detected at alpha "
                f"{t['alpha']:g}, so its attacks count neither as removals nor as survivals "
                "(the protocol does not run them): " + ", ".join(
                    f"{c['scheme']} seed {c['seed']} ({c['matches']}/{c['total']}, "
                    f"p = {c['p_value']:.2g})" for c in t["not_embedded"])]
    attacks = sorted({a for row in t["payoff"].values() for a in row})
    schemes = list(t["payoff"])  # attacks down, schemes across: there are many more attacks
    out += ["", "**Payoff matrix** (removed / seeds; median loss in points)", "",
            "| attack | " + " | ".join(schemes) + " |", "|---|" + "---|" * len(schemes)]
    for a in attacks:
        cells = []
        for scheme in schemes:
            s = t["payoff"][scheme].get(a)
            cells.append("" if s is None else
                         f"{'**' if s['removed'] else ''}{s['removed']}/{s['seeds']}"
                         f"{'**' if s['removed'] else ''} ({s['median_loss'] * 100:.1f})")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    out += ["", "**Best attack per scheme**", "", "| scheme | attack | removed share | "
            "median loss (points) |", "|---|---|---:|---:|"]
    for b in t["best"]:
        loss = "" if b["median_loss"] is None else f"{b['median_loss'] * 100:.2f}"
        out.append(f"| {b['scheme']} | {b['attack'] or 'none removes it'} | "
                   f"{b['removed_share']:.0%} | {loss} |")
    out += ["", "**Wall time per attack**", "", "| attack | mean seconds | runs |",
            "|---|---:|---:|"]
    out += [f"| {r['attack']} | {r['mean_seconds']:.1f} | {r['runs']} |" for r in t["times"]]
    if t["failed"]:
        out += ["", "**Failed cells** (not counted above)", "", "| scheme | seed | attack | "
                "error |", "|---|---:|---|---|"]
        out += [f"| {c['scheme']} | {c['seed']} | {_name(c)} | "
                f"{c['error'].replace('|', '/')} |" for c in t["failed"]]
    return "\n".join(out) + "\n"


def to_html(t: dict) -> str:
    """The Markdown tables as a standalone page (tables only: no script, no external file)."""
    body, rows = [], []
    for line in [*to_markdown(t).splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([html.escape(c.strip().strip("*")) for c in line.strip("|").split("|")])
            continue
        if rows:
            body.append(_html_table(rows))
            rows = []
        if line.strip():
            body.append(f"<p>{html.escape(line.strip('*'))}</p>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px}")
    return (f"<!doctype html><meta charset=utf-8><title>mlguard evaluation</title>"
            f"<style>{style}</style>" + "\n".join(body))


def _html_table(rows: list[list[str]]) -> str:
    head, *rest = rows
    return ("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rest) +
            "</table>")


def plot(cells: list[dict], path: str | Path, max_loss: float, alpha: float) -> None:
    """Stealing loss (points) against -log10 p, one marker per attacked model, per scheme."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    schemes = sorted({c["scheme"] for c in cells})
    unmarked = {(c["scheme"], c["seed"]) for c in cells
                if c["attack"] == "none" and "error" not in c and not c["detected"]}
    for scheme in schemes:
        points = [(c["accuracy_loss"] * 100, min(-c["log10_p"], 300.0)) for c in cells
                  if c["scheme"] == scheme and c["attack"] != "none" and "error" not in c
                  and (scheme, c["seed"]) not in unmarked]
        if points:
            ax.scatter(*zip(*points), label=scheme, s=18)
    ax.axvline(max_loss * 100, color="grey", linestyle="--", linewidth=1)
    ax.axhline(-math.log10(alpha), color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("stealing loss (test accuracy points)")
    ax.set_ylabel("-log10 p (higher: mark still evident)")
    ax.set_title("removal attacks: below the dotted line and left of the dashed one = removed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(cells: list[dict], folder: str | Path, max_loss: float, alpha: float) -> list[Path]:
    """results.json, results.csv, results.md, results.html and pareto.png in `folder`."""
    folder = Path(folder)
    t = tables(cells, max_loss, alpha)
    written = [folder / n for n in ("results.json", "results.csv", "results.md",
                                    "results.html", "pareto.png")]
    written[0].write_text(json.dumps({"tables": t, "cells": cells}, indent=1, default=str))
    columns = ["scheme", "scheme_name", "seed", "attack", "params", "accuracy",
               "accuracy_loss", "embedding_cost", "matches", "total", "p_value", "log10_p",
               "detected", "seconds"]
    with open(written[1], "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(cells)
    written[2].write_text(to_markdown(t))
    written[3].write_text(to_html(t))
    plot(cells, written[4], max_loss, alpha)
    return written
