"""mlguard: embed a secret watermark while training, and prove ownership with a p-value."""

from ._version import __version__
from ._extension import build_info  # loads the compiled ops first
from . import ops, protect
from .embed import embed
from .evidence import (check_evidence, check_opening, check_registration, evidence,
                       evidence_html, register, reveal)
from .fingerprints import Fingerprints, Identification
from .identity import Identity
from .keys import TriggerKey, load_key
from .mixer import MixedLoader, TriggerMixer, mix
from .scan import scan  # the function; its modules stay importable as mlguard.scan.<name>
from .verdict import Verdict
from .verify import verify, verify_weights
from .weight_keys import WeightKey
from .weight_watermark import WeightEmbedReport, WeightWatermark, embed_weights

__all__ = ["__version__", "build_info", "ops", "embed", "Fingerprints", "Identification",
           "TriggerKey", "load_key", "TriggerMixer", "MixedLoader", "mix", "Verdict", "verify",
           "verify_weights", "WeightKey", "WeightWatermark", "WeightEmbedReport", "embed_weights",
           "protect", "reveal", "check_opening", "Identity", "register", "check_registration",
           "evidence", "check_evidence", "evidence_html", "scan"]
