"""mlguard: embed a secret watermark while training, and prove ownership with a p-value.

The public API; each capability is a subpackage: keys, triggers (trigger-set watermarks),
weights (weight-space watermarks and fingerprints), verification, scan (bulk verification),
ownership (identity, commitments, registration, evidence), attacks (removal attacks) and
evaluation (robustness tables, false-positive calibration), protect (encrypted, signed and
stamped files), files (file formats; `load_model` and `load_state_dict` read model files as
they leak), ops (the compiled ops), cli.

The names are imported on first use (PEP 562), so `import mlguard` and `mlguard --help`
do not import torch; using any of them loads torch and the compiled extension first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> the module that defines it (a subpackage itself where the name is one)
_EXPORTS = {
    "build_info": "._extension",
    "attacks": ".attacks", "data": ".data", "ops": ".ops", "protect": ".protect",
    "RobustnessReport": ".evaluation", "evaluate": ".evaluation",
    "load_state_dict": ".files.checkpoint", "load_model": ".files.model",
    "TriggerKey": ".keys", "WeightKey": ".keys", "load_key": ".keys",
    "EvidenceReport": ".ownership", "Identity": ".ownership", "check_evidence": ".ownership",
    "check_opening": ".ownership", "check_registration": ".ownership",
    "evidence": ".ownership", "evidence_html": ".ownership", "register": ".ownership",
    "reveal": ".ownership",
    "scan": ".scan",  # the function; its modules stay importable as mlguard.scan.<name>
    "MixedLoader": ".triggers", "TriggerMixer": ".triggers", "mix": ".triggers",
    "embed": ".embedding",  # any scheme's key (trigger keys: mlguard.triggers.embed)
    "schemes": ".schemes", "register_scheme": ".schemes", "get_scheme": ".schemes",
    "Verdict": ".verification", "verify": ".verification", "verify_weights": ".verification",
    "retention": ".verification.retention",
    "Fingerprints": ".weights", "Identification": ".weights", "WeightEmbedReport": ".weights",
    "WeightWatermark": ".weights", "embed_weights": ".weights",
}
_SUBPACKAGES = {"attacks", "data", "ops", "protect", "schemes"}

__all__ = ["__version__", "build_info", "ops", "embed", "Fingerprints", "Identification",
           "TriggerKey", "load_key", "TriggerMixer", "MixedLoader", "mix", "Verdict", "verify",
           "verify_weights", "retention", "WeightKey", "WeightWatermark", "WeightEmbedReport",
           "embed_weights", "protect", "reveal", "check_opening", "Identity", "register",
           "check_registration", "evidence", "EvidenceReport", "check_evidence", "evidence_html", "scan",
           "load_model", "load_state_dict", "attacks", "evaluate", "RobustnessReport", "data",
           "schemes", "register_scheme", "get_scheme"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        # any subpackage, as `mlguard.ownership.environment()` after `import mlguard`
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'mlguard' has no attribute '{name}'")
        module = f".{name}"
    importlib.import_module("._extension", __name__)  # the ops are registered before any use
    found = importlib.import_module(module, __name__)
    value = getattr(found, name) if name in _EXPORTS and name not in _SUBPACKAGES else found
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps `mlguard.scan` the function: importing any `mlguard.scan.<module>` first makes
    Python set the package attribute to the subpackage, after it has run."""

    def __setattr__(self, name: str, value) -> None:
        if name == "scan" and isinstance(value, types.ModuleType):
            value = value.scan
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and the documentation tools read
    from . import attacks, data, ops, protect, schemes
    from ._extension import build_info
    from .embedding import embed
    from .schemes import get_scheme, register_scheme
    from .evaluation import RobustnessReport, evaluate
    from .files.checkpoint import load_state_dict
    from .files.model import load_model
    from .keys import TriggerKey, WeightKey, load_key
    from .ownership import (EvidenceReport, Identity, check_evidence, check_opening,
                            check_registration, evidence, evidence_html, register, reveal)
    from .scan import scan
    from .triggers import MixedLoader, TriggerMixer, mix
    from .verification import Verdict, verify, verify_weights
    from .verification.retention import retention
    from .weights import (Fingerprints, Identification, WeightEmbedReport, WeightWatermark,
                          embed_weights)
