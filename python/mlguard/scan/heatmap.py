"""The scan heatmap: -log10 p over model files x keys, readable for thousands of files.

It names at most MAX_FILES files (those with a detection, strongest first, then those
with an error, then the strongest -log10 p) and MAX_KEYS keys (with a detection, then the
strongest), keys by their names (rows.key_name: label, file stem or 16-hex id), and its
title says how many files and keys were left out. Detections are outlined in red, pairs
not checked are grey.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

from .rows import key_name

MAX_FILES = 40  # model files named in the heatmap
MAX_KEYS = 40  # keys named in the heatmap


@dataclass
class HeatmapSelection:
    """What the heatmap shows: files (rows) and keys (columns, by commitment), in order."""

    files: list[str]
    keys: list[str]
    key_names: dict[str, str]  # commitment -> the name on the axis
    left_out: str  # "" or what the title says was left out


def select(rows: list[dict], max_files: int = MAX_FILES, max_keys: int = MAX_KEYS
           ) -> HeatmapSelection:
    """The files and keys that matter: with a detection first (strongest first), then with
    an error, then the strongest -log10 p; at most `max_files` and `max_keys`."""
    strength: dict[str, float] = {}  # path -> max -log10 p over its tested pairs
    key_strength: dict[str, float] = {}
    detected_files: dict[str, float] = {}
    detected_keys: set[str] = set()
    error_files: set[str] = set()
    names: dict[str, str] = {}
    for r in rows:
        path, key = r["path"], r["commitment"]
        names.setdefault(key, key_name(r))
        strength.setdefault(path, -math.inf)
        key_strength.setdefault(key, -math.inf)
        if r["error"] is not None:
            error_files.add(path)
            continue
        value = -r["log10_p_value"]
        strength[path] = max(strength[path], value)
        key_strength[key] = max(key_strength[key], value)
        if r["detected"]:
            detected_files[path] = max(detected_files.get(path, -math.inf), value)
            detected_keys.add(key)
    files = list(strength)
    if len(files) > max_files:
        rank = {p: i for i, p in enumerate(files)}
        files = sorted(files, key=lambda p: (p not in detected_files, p not in error_files,
                                             -detected_files.get(p, strength[p]), rank[p]))
        files = files[:max_files]
    keys = list(key_strength)
    if len(keys) > max_keys:
        rank = {k: i for i, k in enumerate(keys)}
        keys = sorted(keys, key=lambda k: (k not in detected_keys, -key_strength[k], rank[k]))
        keys = keys[:max_keys]
    return HeatmapSelection(files, keys, _unique_names(keys, names),
                            _left_out(strength, files, keys, key_strength, detected_files,
                                      error_files))


def _unique_names(keys: list[str], names: dict[str, str]) -> dict[str, str]:
    """Key names, with the key id added where two keys would read the same."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[names[k]] = counts.get(names[k], 0) + 1
    return {k: names[k] if counts[names[k]] == 1 else f"{names[k]} ({k[:8]})" for k in keys}


def _left_out(strength, files, keys, key_strength, detected_files, error_files) -> str:
    shown = set(files)
    hidden = [p for p in strength if p not in shown]
    parts = []
    if hidden:
        det = sum(1 for p in hidden if p in detected_files)
        err = sum(1 for p in hidden if p in error_files)
        if det or err:
            parts.append(f"+ {len(hidden):,} more files ({det:,} with detections, {err:,} "
                         "with errors)")
        else:
            parts.append(f"+ {len(hidden):,} files with nothing detected")
    if len(keys) < len(key_strength):
        parts.append(f"+ {len(key_strength) - len(keys):,} keys")
    return ", ".join(parts) + ", see the table" if parts else ""


def heatmap_figure(rows: list[dict], alpha: float):
    """The heatmap as a matplotlib Figure (see the module docstring)."""
    # A bare Figure renders with Agg and leaves pyplot's global backend and state alone.
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    sel = select(rows)
    file_index = {p: i for i, p in enumerate(sel.files)}
    key_index = {k: j for j, k in enumerate(sel.keys)}
    values = np.full((len(sel.files), len(sel.keys)), np.nan)
    detected, errors = [], set()
    total_detections = 0
    for r in rows:
        total_detections += bool(r["detected"])
        i, j = file_index.get(r["path"]), key_index.get(r["commitment"])
        if i is None or j is None:
            continue
        if r["error"] is None:
            values[i, j] = -r["log10_p_value"]
        else:
            errors.add(i)
        if r["detected"]:
            detected.append((i, j))
    finite = values[np.isfinite(values)]
    vmax = max(10.0, float(finite.max()) if finite.size else 0.0)
    longest = max((len(n) for n in sel.key_names.values()), default=8)
    fig = Figure(figsize=(min(7 + 0.4 * len(sel.keys), 18),
                          min(3.5 + 0.25 * len(sel.files) + 0.06 * min(longest, 40), 16)),
                 layout="constrained")  # room for long names and the colorbar's label
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=0, vmax=vmax,
                      interpolation="nearest")
    for i, j in detected:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                               linewidth=2))
    fig.colorbar(image, ax=ax, label="-log10 p")
    ax.set_xticks(range(len(sel.keys)), [_short(sel.key_names[k], 30) for k in sel.keys],
                  rotation=45, ha="right", fontsize=7)
    paths = sel.files
    base = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    ticks = [_short(os.path.relpath(p, base)) + ("  (error)" if i in errors else "")
             for i, p in enumerate(paths)]
    ax.set_yticks(range(len(paths)), ticks, fontsize=7)
    ax.set_xlabel(f"key ({len(sel.keys)} shown)")
    ax.set_ylabel(f"model files under {_short(base)} ({len(paths)} shown)", fontsize=8)
    files = len({r["path"] for r in rows})
    title = (f"-log10 p per test; {total_detections} detection"
             f"{'' if total_detections == 1 else 's'} (red: adjusted p < {alpha:g}); "
             f"grey: not checked\n{len(paths):,} of {files:,} files shown")
    if sel.left_out:
        title += f"; {sel.left_out}"
    ax.set_title(title, fontsize=9)
    return fig


def heatmap_png(rows: list[dict], alpha: float) -> bytes:
    """PNG bytes of the -log10 p heatmap (model files x keys)."""
    buf = io.BytesIO()
    heatmap_figure(rows, alpha).savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _short(text: str, limit: int = 50) -> str:
    """The end of a long path or name (where file names differ), marked with an ellipsis."""
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]
