"""`evidence(verdicts, suspect_file, ...)`: build and sign an evidence report of a detection.

The report is an `EvidenceReport`: a plain dict (what is saved as JSON and checked by
check_evidence) that a notebook shows as its HTML page.
"""

from __future__ import annotations

import html
import os
import shlex
import sys
from collections.abc import Iterable, Mapping

from .._version import __version__
from ..verification.verdict import Verdict
from .commitments import reveal
from .documents import VERSION, environment, file_facts, now
from .identity import Identity, sign_document
from .report import EVIDENCE_FORMAT, _content_problems
from .report_html import evidence_html


class EvidenceReport(dict):
    """A signed evidence report (a dict). In Jupyter it shows its HTML page, with the checks
    that can run without the suspect file or the owner's public key."""

    def _repr_html_(self) -> str:
        # An iframe keeps the page's own styles out of the notebook's.
        return (f'<iframe srcdoc="{html.escape(evidence_html(self))}" '
                f'style="width:100%;height:36em;border:1px solid #ccc"></iframe>')


def evidence(verdicts: Iterable[Verdict | Mapping], suspect_file: str | os.PathLike,
             opening: Mapping | list[Mapping] | None = None, identity: Identity | None = None,
             *, command: str | None = None, note: str | None = None) -> EvidenceReport:
    """A signed evidence report that `suspect_file` carries the watermarks in `verdicts`.

    `opening`: reveal(key) output (or a list), included so the expert can check the key
    against its published commitment. `command`: the exact command that re-runs the check
    (default: this process's command line). Raises ValueError if the report would not pass
    check_evidence (an inconsistent verdict, an opening for another key, verdicts about a
    model whose weights differ from the suspect file's).
    """
    if not isinstance(identity, Identity):
        raise TypeError(f"identity must be an mlguard.Identity to sign the report, got "
                        f"{type(identity).__name__}")
    vds = [_as_verdict_dict(v) for v in verdicts]
    if not vds:
        raise ValueError("verdicts must not be empty")
    openings = [] if opening is None else [opening] if isinstance(opening, Mapping) \
        else list(opening)
    openings = [reveal(o) for o in openings]  # validates and copies
    suspect = file_facts(os.fspath(suspect_file))
    if command is None:
        command = shlex.join([sys.executable] + sys.argv)
    doc = {"format": EVIDENCE_FORMAT, "version": VERSION, "created": now(),
           "mlguard_version": __version__, "suspect": suspect, "verdicts": vds,
           "commitments": sorted({str(v.get("commitment")) for v in vds}),
           "openings": openings, "environment": environment(),
           "rerun": {"command": str(command), "cwd": os.getcwd()},
           "summary": {"detected": any(v.get("detected") is True for v in vds),
                       "verdicts": len(vds)}}
    if note is not None:
        doc["note"] = str(note)
    problems = _content_problems(doc)
    if problems:
        raise ValueError("evidence would not verify: " + "; ".join(problems))
    return EvidenceReport(sign_document(doc, identity))


def _as_verdict_dict(v: Verdict | Mapping) -> dict:
    """A verdict as the report stores it: current field names (older verdict JSON has
    model_sha256); a dict that is no verdict is kept as is for the checks to name."""
    if isinstance(v, Verdict):
        return v.to_dict()
    try:
        return Verdict.from_dict(v).to_dict()
    except (TypeError, ValueError):
        return dict(v) if isinstance(v, Mapping) else v
