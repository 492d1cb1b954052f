"""mlguard: embed a secret watermark while training, and prove ownership with a p-value.

The public API; each capability is a subpackage: schemes (the watermarking schemes behind
one interface, and their registry), keys, triggers (trigger-set watermarks),
weights (weight-space watermarks and fingerprints), verification, scan (bulk verification),
ownership (identity, commitments, registration, evidence), attacks (removal attacks) and
evaluation (robustness tables, false-positive calibration), protect (encrypted, signed and
stamped files), files (file formats; `load_model` and `load_state_dict` read model files as
they leak), ops (the compiled ops), cli.
"""

from ._version import __version__  # noqa: I001  (the extension must load before the ops)
from ._extension import build_info
from . import schemes  # first: the scheme modules import the library's other parts
from .schemes import get_scheme, register_scheme
from . import attacks, data, ops, protect
from .evaluation import RobustnessReport, evaluate
from .files.checkpoint import load_state_dict
from .files.model import load_model
from .keys import TriggerKey, WeightKey, load_key
from .ownership import (EvidenceReport, Identity, check_evidence, check_opening,
                        check_registration, evidence, evidence_html, register, reveal)
from .scan import scan  # the function; its modules stay importable as mlguard.scan.<name>
from .triggers import MixedLoader, TriggerMixer, mix
from .embedding import embed  # any scheme's key (trigger keys: mlguard.triggers.embed)
from .verification import Verdict, verify, verify_weights
from .verification.retention import retention
from .weights import (Fingerprints, Identification, WeightEmbedReport, WeightWatermark,
                      embed_weights)

__all__ = ["__version__", "build_info", "ops", "embed", "Fingerprints", "Identification",
           "TriggerKey", "load_key", "TriggerMixer", "MixedLoader", "mix", "Verdict", "verify",
           "verify_weights", "retention", "WeightKey", "WeightWatermark", "WeightEmbedReport",
           "embed_weights", "protect", "reveal", "check_opening", "Identity", "register",
           "check_registration", "evidence", "EvidenceReport", "check_evidence", "evidence_html", "scan",
           "load_model", "load_state_dict", "attacks", "evaluate", "RobustnessReport", "data",
           "schemes", "register_scheme", "get_scheme"]
