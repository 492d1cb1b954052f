"""Bulk verification: many model files x many keys -> a table of verdicts with p-values.

    rows = mlguard.scan("suspects/", ["owner.key", "customer7.key"],
                        arch="torchvision.models:resnet18", journal="scan.db")

Modules: loading (finding and safely decoding files), checkers (each registered scheme's
read_many as a checker, and the registry other checkers plug into), staging (pinned
buffers, side CUDA stream), pipeline (the streaming loop and ``scan``), journal (SQLite,
resumable), rows (p-values, the Bonferroni correction, ``row_verdict`` for evidence
reports), report (JSON, CSV, PNG, HTML), distributed (torchrun), buffers and
safetensors_view (reused host memory, zero-copy safetensors), weight_checker
(check_weights, now schemes/weight.py's batched read).
"""

from .checkers import (CHECKERS, CheckerOptions, LoadedModel, Outcome, checker_for,
                       register_checker, register_state_dict_checker, scheme_of)
from . import weight_checker  # noqa: F401  (check_weights, kept for its callers)
from .loading import ModelFileError
from .pipeline import ScanInterrupted, load_keys, scan
from .result import ScanResult
from .report import write as write_report
from .rows import COLUMNS, row_verdict, summary_line

__all__ = ["scan", "ScanResult", "load_keys", "write_report", "summary_line", "COLUMNS",
           "row_verdict", "CHECKERS", "checker_for", "CheckerOptions", "LoadedModel", "Outcome",
           "register_checker", "register_state_dict_checker", "scheme_of", "ModelFileError",
           "ScanInterrupted"]
