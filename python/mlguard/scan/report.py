"""Scan outputs: JSON and CSV of all rows, a heatmap PNG and an HTML page.

Keys are named for people everywhere: by label (a fingerprint key's customer id), else by
their file's stem, else by their 16-hex id (rows.key_name); rows carry key_label and
key_path.

The heatmap (scan/heatmap.py) shows -log10 p over model files x keys and stays readable
for thousands of files; the HTML page (scan/html_report.py) embeds it, lists the
detections, groups the errors by key and holds a table of all rows that can be sorted and
filtered offline.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .._version import __version__
from .heatmap import heatmap_png
from .html_report import write_html
from .rows import COLUMNS


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


def write_png(rows: list[dict], path, alpha: float) -> None:
    Path(path).write_bytes(heatmap_png(rows, alpha))
