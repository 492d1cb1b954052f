"""RobustnessReport: the rows of an evaluation in every form people read them in."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("attack", "params", "key", "scheme", "accuracy", "accuracy_change", "matches",
           "total", "p_value", "log10_p", "detected", "seconds")


@dataclass(frozen=True)
class Row:
    """One (attack, parameters, key): the attacked model's test accuracy and verdict."""

    attack: str  # "none" for the unattacked model
    params: str
    key: str
    scheme: str  # the key's scheme name (mlguard.schemes)
    accuracy: float
    accuracy_change: float  # from the unattacked model
    matches: int
    total: int
    p_value: float  # may underflow to 0.0; log10_p is exact
    log10_p: float
    detected: bool
    seconds: float  # the attack's own run time
    info: dict = field(default_factory=dict)  # what the attack reported it did

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RobustnessReport:
    rows: list[Row]
    alpha: float
    base_accuracy: float
    attacker: str  # what the attacker had
    test: str

    # -- tables --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "base_accuracy": self.base_accuracy,
                "attacker": self.attacker, "test": self.test,
                "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict) -> RobustnessReport:
        """A report from to_dict() / to_json() output (e.g. to re-draw a saved run's plot)."""
        try:
            return cls(rows=[Row(**r) for r in d["rows"]], alpha=float(d["alpha"]),
                       base_accuracy=float(d["base_accuracy"]), attacker=str(d["attacker"]),
                       test=str(d["test"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a RobustnessReport dict: {e}") from None

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        _write(path, text + "\n")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in self.rows:
            writer.writerow([getattr(r, c) for c in COLUMNS])
        _write(path, buffer.getvalue())
        return buffer.getvalue()

    def to_markdown(self, path: str | Path | None = None) -> str:
        lines = [(f"Attacker data: {self.attacker}. Test data: {self.test}. Unattacked "
                  f"accuracy {100 * self.base_accuracy:.2f}%. Detected: p < {self.alpha:g}."),
                 "",
                 "| attack | params | key | test acc | Δ acc | matches | p-value | detected | s |",
                 "|---|---|---|---:|---:|---:|---:|:---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.attack} | {r.params or '-'} | {r.key} | "
                         f"{100 * r.accuracy:.2f}% | {100 * r.accuracy_change:+.2f} | "
                         f"{r.matches}/{r.total} | {format_p(r.log10_p)} | "
                         f"{'yes' if r.detected else '**no**'} | {r.seconds:.1f} |")
        text = "\n".join(lines) + "\n"
        _write(path, text)
        return text

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas, which mlguard does not require)."""
        try:
            import pandas as pd  # optional dependency: only this method needs it
        except ImportError:
            raise ImportError("to_pandas needs pandas (pip install pandas); to_csv() and "
                              "to_json() need nothing extra") from None
        return pd.DataFrame([{c: getattr(r, c) for c in COLUMNS} for r in self.rows])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in
                       ("attack", "params", "key", "test acc", "Δ acc", "matches", "p-value",
                        "detected"))
        body = []
        for r in self.rows:
            style = "" if r.detected else ' style="background:#fde0dd"'
            cells = (r.attack, r.params or "-", r.key, f"{100 * r.accuracy:.2f}%",
                     f"{100 * r.accuracy_change:+.2f}", f"{r.matches}/{r.total}",
                     format_p(r.log10_p), "yes" if r.detected else "no")
            body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                 for c in cells) + "</tr>")
        return (f"<p>{html.escape(self.attacker)}; unattacked accuracy "
                f"{100 * self.base_accuracy:.2f}%; detected: p &lt; {self.alpha:g}</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    # -- the frontier plot ----------------------------------------------------------------

    def plot(self, path: str | Path, title: str | None = None) -> None:
        """Test accuracy against -log10 p, one marker per attack and one colour per key,
        with the detection threshold: points left of the line are attacks that removed the
        mark, and their height is what the removal cost."""
        import matplotlib  # heavy; only plotting needs it
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = list(dict.fromkeys(r.key for r in self.rows))
        attacks = list(dict.fromkeys(r.attack for r in self.rows))
        markers = ["o", "*", "s", "v", "^", "<", ">", "p", "D", "h", "P", "X", "$J$", "$B$",
                   "d", "8", "H"]  # filled markers only; jpeg and blur as letters
        colours = plt.get_cmap("tab10")
        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=90)
        for r in self.rows:
            x = max(-r.log10_p, 1e-3)
            ax.scatter(x, 100 * r.accuracy, marker=markers[attacks.index(r.attack) % len(markers)],
                       color=colours(keys.index(r.key) % 10), s=70 if r.attack == "none" else 36,
                       alpha=0.85, edgecolors="black" if r.attack == "none" else "none")
        ax.axvline(-math.log10(self.alpha), color="red", linestyle="--", linewidth=1)
        ax.text(-math.log10(self.alpha), ax.get_ylim()[1], f" detected: p < {self.alpha:g} →",
                color="red", va="top", fontsize=8)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0)
        ax.set_xlabel("−log10 p-value of the owner's key on the attacked model")
        ax.set_ylabel("test accuracy of the attacked model (%)")
        ax.set_title(title or "Which attacks remove the watermark, and at what accuracy")
        handles = [plt.Line2D([], [], linestyle="", marker="o", color=colours(i % 10), label=k)
                   for i, k in enumerate(keys)]
        handles += [plt.Line2D([], [], linestyle="", marker=markers[i % len(markers)],
                               color="grey", label=a) for i, a in enumerate(attacks)]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  title="key / attack", title_fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def format_p(log10_p: float) -> str:
    if log10_p >= -3:
        return f"{10 ** log10_p:.3g}"
    exponent = math.floor(log10_p)
    return f"{10 ** (log10_p - exponent):.2f}e{exponent}"


def _write(path, text: str) -> None:
    if path is not None:
        Path(path).write_text(text)
