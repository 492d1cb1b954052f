"""Which ownership evidence survives model extraction (issue 21): every key of a victim in the
extraction zoo (benchmarks/extraction_zoo.py) is verified against the victim, each model
stolen or derived from it, and every independent model (the null).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_extraction_evidence.py \
        --zoo /work/zoo/fashion-mnist --md evidence.md --json evidence.json

Keys: by default the victims' own (manifest "keys") and every <zoo>/keys/*.key; or --keys
FILE... (any registered scheme, read with mlguard.load_key and mlguard.verify). A key belongs
to the victim its file name names ("...victim-s<seed>..."); its type is the rest of the name
("victim-s0.adi.key" -> adi, "dataset-inference-victim-s0.key" -> dataset-inference).

The null: per key type, the (key, independent model) readings: false detections at alpha,
the largest match count, and a chi-square goodness-of-fit of the match counts against
Binomial(total, chance) with each verdict's own total and chance (scipy.stats.chisquare on
bins of expected count >= 5, merged from the tails). The readings of one model by the three
victims' keys are not independent of each other; the fit treats them as if they were.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_zoo import load_zoo  # noqa: E402

VICTIM = re.compile(r"victim-s(\d+)")
ROW_ORDER = ["victim", "retrain", "retrain-soft", "knockoff", "transfer", "distill",
             "rtal+distill", "retrain-xarch", "ftal"]


def key_files(root: Path, manifest: dict, given: list[str] | None) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    own = [root / k for m in manifest["models"] if m["role"] == "victim" for k in m["keys"]]
    return own + sorted((root / "keys").glob("*.key"))


def key_identity(path: Path) -> tuple[str, str]:
    """(victim name, key type) from the file name."""
    found = VICTIM.search(path.name)
    if found is None:
        raise ValueError(f"key file {path}: its name must name its victim as 'victim-s<seed>'")
    rest = (path.name[:found.start()] + path.name[found.end():]).removesuffix(".key")
    return f"victim-s{found.group(1)}", rest.strip(".-_") or "key"


def row_name(entry: dict) -> str:
    if entry["role"] == "victim":
        return "victim"
    if entry["attack"] == "retrain" and entry.get("attack_info", {}).get("labels") == "soft":
        return "retrain-soft"
    return entry["attack"]


def read(model, key, alpha: float) -> dict:
    """One verdict as plain figures; a key the model cannot be read with (a weight key on
    another architecture) is recorded as n/a with the reason, not as a miss."""
    import mlguard
    try:
        v = mlguard.verify(model, key, alpha=alpha)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        return {"na": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    return {"matches": v.matches, "total": v.total, "chance": v.chance,
            "log10_p": v.log_p_value / math.log(10), "detected": bool(v.detected),
            "test": v.test}


def binomial_fit(readings: list[dict]) -> dict:
    """Chi-square of the observed match counts against the null's binomial: with one
    (total, chance) for all readings, mlguard.evaluation.binomial_fit (bins of expected
    count >= 5); otherwise the sum of each reading's Binomial(total, chance), binned alike."""
    from scipy import stats

    from mlguard.evaluation import binomial_fit as fit_one
    rs = [r for r in readings if "matches" in r]
    if len(rs) < 2:
        return {}
    counts = [r["matches"] for r in rs]
    shared = {(r["total"], r["chance"]) for r in rs}
    base = {"mean_matches": float(np.mean(counts)),
            "mean_expected": float(np.mean([r["total"] * r["chance"] for r in rs]))}
    if len(shared) == 1:
        (total, chance), = shared
        f = fit_one(counts, total, chance)
        if f.dof == 0:
            return {"test": "chi-square", "bins": 1, "note": "too few readings for a fit",
                    **base}
        return {"test": f"chi-square vs Binomial({total}, {chance:g})", "bins": len(f.bins),
                "statistic": f.chi2, "p": f.p_value, **base}
    top = max(r["total"] for r in rs)
    observed = np.bincount(counts, minlength=top + 1).astype(float)
    expected = np.zeros(top + 1)
    for r in rs:
        expected[:r["total"] + 1] += stats.binom.pmf(np.arange(r["total"] + 1), r["total"],
                                                     r["chance"])
    bins_o, bins_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            bins_o.append(acc_o), bins_e.append(acc_e)
            acc_o = acc_e = 0.0
    if bins_o:  # the upper tail joins the last bin
        bins_o[-1] += acc_o
        bins_e[-1] += acc_e
    if len(bins_o) < 2:
        return {"test": "chi-square", "bins": len(bins_o), "note": "too few bins", **base}
    stat, p = stats.chisquare(bins_o, np.array(bins_e) * (sum(bins_o) / sum(bins_e)))
    return {"test": "chi-square vs the readings' Binomial(total, chance) mixture",
            "bins": len(bins_o), "statistic": float(stat), "p": float(p), **base}


def run(root: Path, keys: list[Path], alpha: float, partial: bool, log=print,
        reuse: dict | list[dict] | None = None, roles=None, null_victims=None) -> dict:
    """Every key on its victim's models and on every independent one. `reuse`: an earlier
    run's JSON whose readings (same model, same key file, same alpha) are taken as they are.
    `roles`: read only models of these roles; `null_victims`: read the independents only
    with these victims' keys (a costly key type on a busy machine)."""
    import mlguard
    zoo = load_zoo(root, partial=partial)
    models = zoo["models"]
    loaded, unreadable = [], {}
    for path in keys:
        victim, kind = key_identity(path)
        try:
            loaded.append((victim, kind, path, mlguard.load_key(path)))
        except ValueError as e:  # e.g. a scheme this mlguard does not register
            unreadable[str(path)] = str(e)
            log(f"skipped {path}: {e}")
    done = {}
    for earlier in reuse if isinstance(reuse, list) else [reuse]:
        done.update(previous_readings(earlier, alpha))

    def read_cached(entry, path, key):
        cached = done.get((entry["name"], path.name))
        return dict(cached) if cached is not None else read(entry["model"], key, alpha)

    kinds = list(dict.fromkeys(k for _, k, _, _ in loaded))
    rows, null = [], {k: [] for k in kinds}
    for entry in models:
        t = time.perf_counter()
        if roles is not None and entry["role"] not in roles:
            continue
        if entry["role"] == "independent":
            for victim, kind, path, key in loaded:
                if null_victims is not None and victim not in null_victims:
                    continue
                null[kind].append({"model": entry["name"], "key": path.name,
                                   **read_cached(entry, path, key)})
        else:
            victim = entry["name"] if entry["role"] == "victim" else entry["victim"]
            cells = {kind: {"key": p.name, **read_cached(entry, p, key)}
                     for v, kind, p, key in loaded if v == victim}
            rows.append({"model": entry["name"], "row": row_name(entry),
                         "seed": entry["seed"], "victim": victim,
                         "test_accuracy": entry["test_accuracy"],
                         "stealing_loss": entry.get("stealing_loss"), "keys": cells})
        log(f"{entry['name']:<28} read in {time.perf_counter() - t:.1f} s")
    rows.sort(key=lambda r: (ROW_ORDER.index(r["row"]) if r["row"] in ROW_ORDER else 99,
                             r["seed"]))
    summary = {}
    for kind, rs in null.items():
        ok = [r for r in rs if "matches" in r]
        summary[kind] = {
            "readings": len(ok), "not_readable": len(rs) - len(ok),
            "false_detections": sum(r["detected"] for r in ok),
            "max_matches": max((r["matches"] for r in ok), default=None),
            "total": sorted({r["total"] for r in ok}),
            "min_log10_p": min((r["log10_p"] for r in ok), default=None),
            "fit": binomial_fit(ok)}
    return {"zoo": str(root), "alpha": alpha, "keys": [str(p) for _, _, p, _ in loaded],
            "unreadable_keys": unreadable,
            "kinds": kinds, "null_victims": null_victims,
            "independents": sum(m["role"] == "independent" for m in models
                                if roles is None or "independent" in roles),
            "rows": rows, "null": summary, "null_readings": null}


def previous_readings(result: dict | None, alpha: float) -> dict:
    """{(model, key file name): reading} from an earlier run's JSON at the same alpha."""
    if not result:
        return {}
    if result["alpha"] != alpha:
        raise ValueError(f"--reuse was run at alpha {result['alpha']}, this run at {alpha}")
    out = {}
    for r in result["rows"]:
        for c in r["keys"].values():
            out[(r["model"], c["key"])] = {k: v for k, v in c.items() if k != "key"}
    for rs in result["null_readings"].values():
        for c in rs:
            out[(c["model"], c["key"])] = {k: v for k, v in c.items()
                                           if k not in ("model", "key")}
    return out


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if "na" in r:
        return "n/a"
    verdict = "**DETECTED**" if r["detected"] else "not detected"
    return f"{r['matches']}/{r['total']}, p={p_text(r['log10_p'])}, {verdict}"


def p_text(log10_p: float) -> str:
    from mlguard.verification.stats import format_p
    return format_p(log10_p * math.log(10))


def to_markdown(result: dict) -> str:
    kinds = result["kinds"]
    out = [f"Alpha {result['alpha']:g}; stealing loss = victim's eval accuracy - the model's "
           "(points); cell = matches/total, p-value, verdict; n/a = the key cannot be read on "
           "that architecture.", "",
           "| model | attack | seed | eval acc | stealing loss | " + " | ".join(kinds) + " |",
           "|---|---|---:|---:|---:|" + "---|" * len(kinds)]
    for r in result["rows"]:
        loss = "" if r["stealing_loss"] is None else f"{100 * r['stealing_loss']:+.2f}"
        out.append(f"| {r['model']} | {r['row']} | {r['seed']} | {100 * r['test_accuracy']:.2f}% | "
                   f"{loss} | " + " | ".join(cell(r["keys"].get(k)) for k in kinds) + " |")
    if result.get("unreadable_keys"):
        out += ["", "Keys not read (their scheme is not registered here): "
                + "; ".join(f"{Path(k).name}" for k in result["unreadable_keys"])]
    readers = ("every victim's key of the type" if not result.get("null_victims")
               else "the keys of " + ", ".join(result["null_victims"]) + " only")
    out += ["", f"**Null: {result['independents']} independent models** (each read with "
            f"{readers})", "",
            "| key type | readings | n/a | false detections | max matches | min p | "
            "goodness of fit |", "|---|---:|---:|---:|---|---:|---|"]
    for kind, s in result["null"].items():
        fit = s["fit"]
        gof = (f"{fit['test']}: chi2={fit['statistic']:.1f}, {fit['bins'] - 1} dof, "
               f"p={fit['p']:.2g} "
               f"(mean {fit['mean_matches']:.1f} vs {fit['mean_expected']:.1f} expected)"
               if "p" in fit else fit.get("note", "—"))
        top = "—" if s["max_matches"] is None else \
            f"{s['max_matches']}/{'/'.join(map(str, s['total']))}"
        minp = "—" if s["min_log10_p"] is None else p_text(s["min_log10_p"])
        out.append(f"| {kind} | {s['readings']} | {s['not_readable']} | "
                   f"{s['false_detections']} | {top} | {minp} | {gof} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", required=True, help="the zoo folder (manifest.json)")
    p.add_argument("--keys", nargs="+", default=None,
                   help="key files (default: the victims' keys and <zoo>/keys/*.key)")
    p.add_argument("--alpha", type=float, default=1e-6)
    p.add_argument("--roles", nargs="+", default=None,
                   choices=["victim", "stolen", "derived", "independent"],
                   help="read only these models (default: all)")
    p.add_argument("--null-victims", nargs="+", default=None, metavar="VICTIM",
                   help="read the independents only with these victims' keys, e.g. victim-s0")
    p.add_argument("--partial", action="store_true", help="read manifest.partial.json")
    p.add_argument("--reuse", nargs="+", default=None, metavar="JSON",
                   help="earlier --json files: their readings are kept, only new pairs are read")
    p.add_argument("--md", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    root = Path(args.zoo)
    manifest = json.loads((root / ("manifest.partial.json" if args.partial
                                   else "manifest.json")).read_text())
    start = time.perf_counter()
    reuse = [json.loads(Path(f).read_text()) for f in args.reuse or []]
    result = run(root, key_files(root, manifest, args.keys), args.alpha, args.partial,
                 log=lambda s: print(s, file=sys.stderr, flush=True), reuse=reuse,
                 roles=args.roles, null_victims=args.null_victims)
    text = to_markdown(result)
    text += (f"\n\nRead in {time.perf_counter() - start:.0f} s; load average "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
