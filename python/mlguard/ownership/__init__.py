"""Ownership evidence: the owner's signing identity, key commitments and their openings,
signed registration records, and signed evidence reports that anyone can re-check.

- `Identity`: an Ed25519 key pair, stored encrypted, that signs records and reports.
- `reveal` / `check_opening` (commitments.py): commit and reveal a key.
- `register` / `check_registration` (registration.py): what was released, with which keys.
- `evidence` (signed_report.py), `check_evidence` (report.py), `evidence_html`
  (report_html.py): a signed report of a detection.
"""

from .commitments import check_opening, reveal
from .documents import environment, load_document
from .identity import Identity
from .registration import check_registration, register
from .report import check_evidence
from .report_html import evidence_html
from .signed_report import EvidenceReport, evidence

__all__ = ["Identity", "reveal", "check_opening", "register", "check_registration",
           "evidence", "EvidenceReport", "check_evidence", "evidence_html", "environment", "load_document"]
