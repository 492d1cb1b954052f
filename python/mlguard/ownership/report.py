"""Checking evidence reports: `check_evidence` verifies the signature and recomputes
everything that can be recomputed from the files at hand (p-values and decisions,
commitments, the suspect's hashes). signed_report.py builds and signs them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ..schemes.base import SCHEMES
from ..verification import stats
from ..verification.verdict import Verdict, make_verdict
from .commitments import HEX64, check_opening
from .documents import file_problems, load_signed

EVIDENCE_FORMAT = "mlguard-evidence"
_REL_TOL = 1e-9  # recomputed p-values may differ in the last digits across lgamma versions

def _verdict_problems(d: Any, label: str) -> list[str]:
    """Recomputes one verdict's test from its counts; lists every disagreement."""
    try:
        v = Verdict.from_dict(d)
        ref = make_verdict(v.scheme, v.matches, v.total, v.chance, v.alpha, v.commitment,
                           v.weights_sha256, v.device, v.extra, v.file_sha256, reads=v.reads)
    except (TypeError, ValueError) as e:
        return [f"{label}: not a valid verdict ({e})"]
    problems = []
    if not math.isclose(v.log_p_value, ref.log_p_value, rel_tol=_REL_TOL):
        problems.append(f"{label}: log p-value is {v.log_p_value!r}, recomputed "
                        f"{ref.log_p_value!r} from {v.matches}/{v.total} at chance {v.chance:g}")
    if not math.isclose(v.p_value, ref.p_value, rel_tol=_REL_TOL):
        problems.append(f"{label}: p-value is {v.p_value!r}, recomputed {ref.p_value!r} from "
                        f"{v.matches}/{v.total} at chance {v.chance:g}")
    log10 = d.get("log10_p_value", stats.log10_p(ref.log_p_value))
    if not isinstance(log10, (int, float)) or not math.isclose(
            log10, stats.log10_p(ref.log_p_value), rel_tol=_REL_TOL):
        problems.append(f"{label}: log10 p-value is {d['log10_p_value']!r}, recomputed "
                        f"{stats.log10_p(ref.log_p_value)!r}")
    if v.detected != ref.detected:
        problems.append(f"{label}: detected is {v.detected}, but p = "
                        f"{stats.format_p(ref.log_p_value)} vs alpha {v.alpha:g} gives "
                        f"{ref.detected}")
    if v.test != ref.test:
        problems.append(f"{label}: test is {v.test!r}, expected {ref.test!r}")
    if not HEX64.fullmatch(v.commitment):
        problems.append(f"{label}: commitment is not 64 hex digits")
    return problems


def _opening_problems(openings: Any, verdicts: list[dict]) -> list[str]:
    if not isinstance(openings, list):
        return ["openings must be a list"]
    problems = []
    for i, opening in enumerate(openings):
        label = f"opening {i}"
        try:
            matched = [v for v in verdicts if isinstance(v, Mapping)
                       and HEX64.fullmatch(str(v.get("commitment")))
                       and check_opening(v["commitment"], opening)]
        except (TypeError, ValueError) as e:
            problems.append(f"{label}: {e}")
            continue
        if not matched:
            problems.append(f"{label}: opens none of the verdicts' commitments")
            continue
        # The trial count and per-trial chance a verdict for the opened key must use: its
        # scheme's expected_test (a scheme not registered here is not recomputed).
        scheme = SCHEMES.get(opening.get("scheme"))
        if scheme is None:
            continue
        try:
            total, chance = scheme.expected_test(opening)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            problems.append(f"{label}: {opening.get('scheme')} key body lacks its parameters")
            continue
        for v in matched:
            used = v.get("chance")
            if v.get("total") != total or not isinstance(used, (int, float)) \
                    or not math.isclose(used, chance, rel_tol=1e-12):
                problems.append(f"{label}: the key implies {total} trials at chance {chance:g}, "
                                f"the verdict used {v.get('total')} at {v.get('chance')}")
    return problems


def _weights_hashes(facts: Mapping, verdict: Mapping) -> tuple[object, object]:
    """(the verdict's weights hash, the suspect file's): the current fields, or for a report
    written before the rename, model_sha256 against the state_dict_sha256 of its time."""
    ours = verdict.get("weights_sha256", verdict.get("model_sha256"))
    if facts.get("weights_sha256") is not None:
        return ours, facts["weights_sha256"]
    return ours, facts.get("state_dict_sha256")


def _content_problems(doc: Mapping) -> list[str]:
    """Everything checkable without the signature or the files."""
    verdicts = doc.get("verdicts")
    if not isinstance(verdicts, list) or not verdicts:
        return ["the document has no verdicts"]
    problems = []
    for i, v in enumerate(verdicts):
        problems += _verdict_problems(v, f"verdict {i}")
    listed = sorted({str(v.get("commitment")) for v in verdicts if isinstance(v, Mapping)})
    if doc.get("commitments") != listed:
        problems.append(f"commitments {doc.get('commitments')!r} differ from the verdicts' "
                        f"{listed!r}")
    problems += _opening_problems(doc.get("openings", []), verdicts)
    suspect = doc.get("suspect")
    if not isinstance(suspect, Mapping) or not HEX64.fullmatch(str(suspect.get("sha256"))):
        problems.append("the suspect record is missing or has no SHA-256")
    elif suspect.get("weights_sha256", suspect.get("state_dict_sha256")) is not None:
        for i, v in enumerate(verdicts):
            if not isinstance(v, Mapping):
                continue
            ours, theirs = _weights_hashes(suspect, v)
            if ours != theirs:
                problems.append(f"verdict {i}: checked a model with weights hash {ours}, but "
                                f"the suspect file's is {theirs}")
    summary = doc.get("summary", {})
    if isinstance(summary, Mapping) and summary.get("detected") != any(
            isinstance(v, Mapping) and v.get("detected") is True for v in verdicts):
        problems.append("summary.detected disagrees with the verdicts")
    return problems


def check_evidence(doc_or_path: Mapping | str | os.PathLike,
                   suspect_file: str | os.PathLike | None = None, *,
                   public_key: Any = None) -> list[str]:
    """Problems with an evidence report (empty list: everything checks).

    Verifies the signature (and, with `public_key`, that the owner signed it); recomputes
    each verdict's p-value and decision from its counts, chance and alpha; checks the listed
    commitments and every included opening; and with `suspect_file`, the file's SHA-256 and
    weights hash. What cannot be recomputed from these files (the model's answers to the
    triggers) is re-run with the command in doc["rerun"].
    """
    doc, problems = load_signed(doc_or_path, EVIDENCE_FORMAT, "evidence report", public_key)
    if doc is None:
        return problems
    problems += _content_problems(doc)
    if suspect_file is not None:
        problems += file_problems(doc.get("suspect"), os.fspath(suspect_file), "suspect file")
    return problems
