"""Result rows: one per (model file, key), and the scan-wide multiple-testing correction.

A row's p-value is the exact one-sided binomial tail for its own test, times ``reads``
where the count is the best of several reads (a weight key read with a reference is read
plain and aligned: the union bound, as the verdict's; see Verdict.reads). A scan runs many
tests, so the decision uses the Bonferroni-adjusted p-value min(1, m * p), where m is the
number of (model, key) pairs actually tested in the scan (error rows are not tests):
``detected`` means adjusted_p_value < alpha, which bounds the chance of even one false
detection in the whole scan by alpha. Everything is computed in log space, so p-values far
below the double range (1e-300 and less) stay exact in the log10 columns.

Each row names its key for people too: ``key_label`` (the key's label, e.g. the customer
id of a fingerprint key; None for a key without one) and ``key_path`` (the key file it was
loaded from; None for a key given as an object). ``key_name(row)`` is the name reports
show: the label, else the key file's stem, else the 16-hex ``key_id``.

A file that cannot be checked gets one error row per key (same columns, counts and
p-values None, ``detected`` False), so every scan has exactly files x keys rows.

``row_verdict(row, alpha=..., tests=...)`` turns a row into a ``Verdict`` (for an evidence
report) whose decision is the scan's: the pair's exact test at level alpha / tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..keys.metadata import display_name
from ..verification import stats
from ..verification.verdict import Verdict, make_verdict
from .checkers import Outcome

COLUMNS = ("path", "file_sha256", "weights_sha256", "file_size", "key_id", "key_label",
           "key_path", "commitment",
           "scheme", "matches", "total", "chance", "reads", "p_value", "log10_p_value",
           "adjusted_p_value", "log10_adjusted_p_value", "detected", "error", "device", "extra")
"""The columns of a scan row, in the order the CSV output writes them."""


def make_row(path: str, size: int | None, sha256: str | None, commitment: str, scheme: str,
             outcome: Outcome, device: str, weights_sha256: str | None = None, *,
             key_label: str | None = None, key_path: str | None = None) -> dict:
    """A row before the correction (adjusted columns None until ``adjust``)."""
    row = dict.fromkeys(COLUMNS)
    row.update(path=path, file_sha256=sha256, weights_sha256=weights_sha256, file_size=size,
               key_id=commitment[:16], key_label=key_label, key_path=key_path,
               commitment=commitment, scheme=scheme, detected=False, device=device, extra={})
    if outcome.error is not None:
        row["error"] = outcome.error
        return row
    log_p = stats.union_log_sf(outcome.matches, outcome.total, outcome.chance, outcome.reads)
    row.update(matches=outcome.matches, total=outcome.total, chance=outcome.chance,
               reads=outcome.reads,
               p_value=math.exp(log_p), log10_p_value=stats.log10_p(log_p),
               extra=dict(outcome.extra))
    return row


def key_columns(key) -> dict:
    """{"key_label": ..., "key_path": ...} of a key object (None where it has none: a
    plug-in scheme's key need not carry them)."""
    label, path = getattr(key, "label", None), getattr(key, "path", None)
    return {"key_label": label if isinstance(label, str) else None,
            "key_path": path if isinstance(path, str) else None}


def name_keys(rows: list[dict], keys: list) -> list[dict]:
    """Sets every row's key columns from the scan's keys (in place), by commitment: rows
    resumed from a journal then name keys as this scan was given them (a key relabelled
    or moved since, a journal written before these columns existed)."""
    columns = {k.commitment(): key_columns(k) for k in keys}
    for r in rows:
        r.update(columns.get(r["commitment"], {}))
    return rows


def key_name(row: Mapping) -> str:
    """The key as people read it: its label, else its file's stem, else its 16-hex id."""
    return display_name(row.get("key_label"), row.get("key_path"), row["key_id"])


def adjust(rows: list[dict], alpha: float) -> list[dict]:
    """Fills the Bonferroni columns and ``detected`` for all rows of a scan (in place)."""
    tests = sum(1 for r in rows if r["error"] is None)
    log10_m = math.log10(max(tests, 1))
    for r in rows:
        if r["error"] is not None:
            r.update(adjusted_p_value=None, log10_adjusted_p_value=None, detected=False)
            continue
        log10_adj = min(0.0, r["log10_p_value"] + log10_m)
        r["log10_adjusted_p_value"] = log10_adj
        # min(1, m p) directly while p is a normal double; from the log once p underflows.
        r["adjusted_p_value"] = min(1.0, r["p_value"] * tests) if r["p_value"] > 0 \
            else 10.0 ** log10_adj
        r["detected"] = log10_adj < math.log10(alpha)
    return rows


def row_verdict(row: Mapping, *, alpha: float, tests: int) -> Verdict:
    """The Verdict of one scan row, e.g. for ``mlguard.evidence``.

    `alpha` and `tests` are the scan's significance level and its number of tests (rows
    without an error; a JSON report holds both): the verdict is the pair's exact test at
    level alpha / tests, so it decides as the row's Bonferroni-adjusted p-value did. It cites
    the row's file SHA-256 and weights hash.
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"row must be a scan row (a dict), got {type(row).__name__}")
    if row.get("error") is not None:
        raise ValueError(f"row has no verdict: the check failed ({row['error']})")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    if isinstance(tests, bool) or not isinstance(tests, int) or tests < 1:
        raise ValueError(f"tests must be an int >= 1 (the scan's tests), got {tests!r}")
    if not row.get("weights_sha256"):
        raise ValueError(f"row has no weights_sha256 (written by an older mlguard?): "
                         f"scan {row.get('path')!r} again")
    extra = dict(row.get("extra") or {})
    extra.update(scan_alpha=alpha, scan_tests=tests)
    return make_verdict(row["scheme"], row["matches"], row["total"], row["chance"],
                        alpha / tests, row["commitment"], row["weights_sha256"], row["device"],
                        extra=extra, file_sha256=row["file_sha256"],
                        key_label=row.get("key_label"), reads=row.get("reads") or 1)


def summary_line(rows: list[dict], seconds: float) -> str:
    """E.g. "scan: 120 models x 3 keys, 4 detections, 2 files with errors, 12.34 s"."""
    files = {r["path"] for r in rows}
    keys = {r["commitment"] for r in rows}
    detections = sum(1 for r in rows if r["detected"])
    bad = {r["path"] for r in rows if r["error"] is not None}
    return (f"scan: {len(files)} models x {len(keys)} keys, {detections} detection"
            f"{'' if detections == 1 else 's'}, {len(bad)} file{'' if len(bad) == 1 else 's'} "
            f"with errors, {seconds:.2f} s")
