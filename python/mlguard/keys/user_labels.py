"""Labels a user gives their own trigger set (TriggerKey.from_images(..., labels=...)).

The exact binomial test behind a verdict assumes each trigger's label was drawn uniformly
at random and kept secret: a model that never saw the triggers then matches each with
probability 1/C. Labels that are all one class, or far from uniform, break that: a model
that predicts that class often (most do, for out-of-distribution images) matches far more
than 1/C and an innocent model is "detected". Such label sets are refused when the key is
made (never when a key is loaded: keys made before the check still load and verify).

A "file name -> label" mapping (a dict or a two-column .csv) pairs each label with its
image by name, so the folder's sorted order cannot pair them wrongly.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

LEVEL = 1e-3  # refuse label sets whose uniformity p-value is below this
_SIMULATIONS = 20_000  # null draws where the chi-square approximation is poor
_MIN_EXPECTED = 20  # per class: where scipy's chi-square p-value is trusted (measured)


def is_mapping(labels) -> bool:
    """True for a dict or a .csv file: labels given per file name, not in folder order."""
    if isinstance(labels, Mapping):
        return True
    return isinstance(labels, (str, os.PathLike)) and \
        os.fspath(labels).lower().endswith(".csv")


def labels_by_name(labels, paths: Sequence[Path]) -> list:
    """The labels of `paths`, in their order, from a dict or a .csv of (file name, label)."""
    if isinstance(labels, Mapping):
        where, entries = "labels", [(str(k), v) for k, v in labels.items()]
    else:
        where, entries = f"labels file {os.fspath(labels)!r}", _read_csv(os.fspath(labels))
    by_name: dict[str, object] = {}
    for name, value in entries:
        base = Path(name).name
        if base in by_name:
            raise ValueError(f"{where}: two entries for the file name {base!r}")
        by_name[base] = value
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"images: several files are named {dup[:3]}: a file-name -> label "
                         "mapping cannot tell them apart")
    missing = [n for n in names if n not in by_name]
    extra = sorted(by_name.keys() - set(names))
    if missing or extra:
        raise ValueError(
            f"{where} does not name the same files as images: "
            + "; ".join(part for part in (
                f"no label for {len(missing)} image(s) {missing[:3]}" if missing else "",
                f"{len(extra)} entry(ies) name no image {extra[:3]}" if extra else "")
                if part))
    return [by_name[n] for n in names]


def _read_csv(path: str) -> list[tuple[str, str]]:
    """Rows of (file name, label); a first row whose label is not a number is a header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"labels file {path!r} cannot be read ({e})") from None
    for n, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"labels file {path!r}: row {n} has {len(row)} columns, "
                             "expected 2 (file name, label)")
    if rows and not _is_number(rows[0][1]):
        rows = rows[1:]  # a header such as "file,label"
    out = []
    for name, value in rows:
        if not _is_number(value):
            raise ValueError(f"labels file {path!r}: the label of {name.strip()!r} is "
                             f"{value.strip()!r}, not a number")
        out.append((name.strip(), float(value)))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_plausibly_uniform(labels: Sequence[int], num_classes: int,
                            level: float = LEVEL) -> None:
    """ValueError when `labels` are implausible as uniform draws over `num_classes`: a
    chi-square goodness-of-fit test against uniform rejects them at `level`."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    p = uniformity_p_value(counts)
    if p >= level:
        return
    n = int(counts.sum())
    top = int(counts.argmax())
    shape = (f"all {n} labels are class {top}" if counts[top] == n else
             f"class {top} has {int(counts[top])} of {n} labels, {n / num_classes:.3g} "
             "expected")
    raise ValueError(
        f"labels are not plausibly uniform over {num_classes} classes ({shape}; chi-square "
        f"goodness-of-fit p = {p:.2g} < {level:g}). The exact test assumes labels drawn "
        "uniformly at random and kept secret; with these, a model that merely favours a class "
        "matches far more than 1/num_classes and an innocent model can be 'detected'. Use "
        "labels=None to draw secret uniform labels from the key (or draw yours uniformly at "
        "random)")


def uniformity_p_value(counts: np.ndarray) -> float:
    """P-value of Pearson's chi-square statistic for class counts under uniform labels.

    Where every class expects >= 20 labels, scipy's chi-square approximation (accurate
    there: benchmarks/bench_label_uniformity.py). Otherwise the statistic's null is
    simulated, and the p-value returned is the 99.9% upper confidence bound (Clopper-
    Pearson) on the share of simulated draws at least as extreme: one fixed simulation
    (seeded, so a label set always gets the same answer) estimates a 1e-3 tail with ~20%
    error, and an estimate that is too small would refuse honest label sets more often
    than LEVEL says. Stopped early once p is clearly above LEVEL."""
    from scipy import stats

    counts = np.asarray(counts, dtype=np.int64)
    n, classes = int(counts.sum()), len(counts)
    if n < 2:
        return 1.0
    if n / classes >= _MIN_EXPECTED:
        return float(stats.chisquare(counts).pvalue)
    # For fixed n and classes the statistic is a function of sum(counts^2).
    observed = int((counts ** 2).sum())
    rng = np.random.default_rng(0)
    chunk = max(1, min(2_000, 2_000_000 // n))  # small first: most sets stop after one
    exceed = done = 0
    while done < _SIMULATIONS:
        rows = min(chunk, _SIMULATIONS - done)
        exceed += int((_sum_of_squared_counts(rng.integers(0, classes, (rows, n))) >=
                       observed).sum())
        done += rows
        if (exceed + 1) / (_SIMULATIONS + 1) >= 10 * LEVEL:
            break  # clearly plausible: more draws cannot bring p below the level
    return float(stats.beta.ppf(0.999, exceed + 1, max(done - exceed, 1)))


def _sum_of_squared_counts(draws: np.ndarray) -> np.ndarray:
    """sum over classes of count^2, per row of label draws: n + 2 * (pairs of equal labels)."""
    s = np.sort(draws, axis=1)
    n = s.shape[1]
    index = np.arange(n)
    starts = np.ones_like(s, dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    return n + 2 * (index - run_start).sum(axis=1)
