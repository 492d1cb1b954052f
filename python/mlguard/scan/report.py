"""Scan outputs: JSON and CSV of all rows, a heatmap PNG and an HTML page.

The heatmap shows -log10 p (the raw, per-test p-value) over models x keys, detections
outlined, error cells grey. The HTML page embeds the PNG and lists the detections and the
files that could not be checked; every value from a file name or an error message is
escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path

from .._version import __version__
from .rows import COLUMNS

_MAX_LABELS = 60  # beyond this many models or keys the axes are left unlabeled


def write(rows: list[dict], path: str | os.PathLike, alpha: float) -> Path:
    """Writes rows in the format named by the suffix: .json, .csv, .png or .html; returns
    the path written."""
    suffix = Path(path).suffix.lower()
    writers = {".json": write_json, ".csv": write_csv, ".png": write_png,
               ".html": write_html, ".htm": write_html}
    if suffix not in writers:
        raise ValueError(f"output '{os.fspath(path)}' must end in .json, .csv, .png or .html")
    writers[suffix](list(rows), path, alpha)
    return Path(path)


def write_json(rows: list[dict], path, alpha: float) -> None:
    doc = {"mlguard_version": __version__, "alpha": alpha,
           "correction": "bonferroni over the (model, key) pairs tested; "
                         "detected = adjusted_p_value < alpha",
           "tests": sum(1 for r in rows if r["error"] is None), "rows": rows}
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


def write_csv(rows: list[dict], path, alpha: float) -> None:
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=COLUMNS)
        out.writeheader()
        for r in rows:
            out.writerow({**r, "extra": json.dumps(r["extra"], sort_keys=True)})


def heatmap_png(rows: list[dict], alpha: float) -> bytes:
    """PNG bytes of the -log10 p heatmap (models x keys)."""
    # A bare Figure renders with Agg and leaves pyplot's global backend and state alone.
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    paths = list(dict.fromkeys(r["path"] for r in rows))
    keys = list(dict.fromkeys(r["key_id"] for r in rows))
    values = np.full((len(paths), len(keys)), np.nan)
    detected = []
    for r in rows:
        i, j = paths.index(r["path"]), keys.index(r["key_id"])
        if r["error"] is None:
            values[i, j] = -r["log10_p_value"]
        if r["detected"]:
            detected.append((i, j))
    finite = values[np.isfinite(values)]
    vmax = max(10.0, float(finite.max()) if finite.size else 0.0)
    fig = Figure(figsize=(min(7 + 0.4 * len(keys), 18), min(2.5 + 0.25 * len(paths), 40)))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=0, vmax=vmax,
                      interpolation="nearest")
    for i, j in detected:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                               linewidth=2))
    fig.colorbar(image, ax=ax, label="-log10 p")
    if len(keys) <= _MAX_LABELS:
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=7)
    base = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    if len(paths) <= _MAX_LABELS:
        ax.set_yticks(range(len(paths)), [_short_path(os.path.relpath(p, base)) for p in paths],
                      fontsize=7)
    ax.set_xlabel("key")
    ax.set_ylabel(f"model files under {_short_path(base)} ({len(paths)})", fontsize=8)
    ax.set_title(f"-log10 p per test; {len(detected)} detections (red: adjusted p < {alpha:g})"
                 "\ngrey: file or pair not checked", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_png(rows: list[dict], path, alpha: float) -> None:
    Path(path).write_bytes(heatmap_png(rows, alpha))


def write_html(rows: list[dict], path, alpha: float) -> None:
    esc = html.escape
    png = base64.b64encode(heatmap_png(rows, alpha)).decode("ascii")
    detections = [r for r in rows if r["detected"]]
    errors = list({r["path"]: r for r in rows if r["error"] is not None}.values())
    det_rows = "".join(
        f"<tr><td>{esc(r['path'])}</td><td><code>{esc(r['key_id'])}</code></td>"
        f"<td>{esc(r['scheme'])}</td><td>{r['matches']}/{r['total']}</td>"
        f"<td>{_p(r['log10_p_value'])}</td><td>{_p(r['log10_adjusted_p_value'])}</td>"
        f"<td><code>{esc(r['file_sha256'] or '')}</code></td></tr>" for r in detections)
    err_rows = "".join(f"<tr><td>{esc(r['path'])}</td><td>{esc(r['error'])}</td></tr>"
                       for r in errors)
    files = len({r["path"] for r in rows})
    keys = len({r["commitment"] for r in rows})
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mlguard scan report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}</style></head>
<body><h1>mlguard scan</h1>
<p>{files} model files &times; {keys} keys; {len(detections)} detections; {len(errors)} files
could not be checked. Detected means the Bonferroni-adjusted p-value (over all tested
pairs) is below alpha = {alpha:g}. mlguard {esc(__version__)}.</p>
<img alt="heatmap of -log10 p over models and keys" src="data:image/png;base64,{png}">
<h2>Detections</h2>
<table><tr><th>file</th><th>key</th><th>scheme</th><th>matches</th><th>p</th>
<th>adjusted p</th><th>file SHA-256</th></tr>{det_rows}</table>
<h2>Files that could not be checked</h2>
<table><tr><th>file</th><th>problem</th></tr>{err_rows}</table>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")


def _p(log10_p: float | None) -> str:
    """A p-value from its log10, exact below the double range (e.g. 3.2e-512)."""
    if log10_p is None:
        return "-"
    from ..verification.stats import format_p
    return format_p(log10_p * math.log(10.0))


def _short_path(path: str, limit: int = 40) -> str:
    return path if len(path) <= limit else "\u2026" + path[-(limit - 1):]
