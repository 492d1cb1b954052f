"""Verification: does a model carry a key's watermark? An exact test, and a verdict that
records it.

- `verify(model, key)`: trigger-set keys (exact binomial at chance 1/C) and weight keys
  (bits read by the keyed projection, chance 1/2); `verify_weights(_many)` for state_dicts.
  Models run in their own dtype (fp16, bf16); a model file path is loaded with load_model.
- `Verdict` (verdict.py): the evidence record; `stats`: the exact binomial tail, in logs.
"""

from . import stats
from .verdict import Verdict, make_verdict, state_dict_sha256
from .verify import normalize, verify, verify_weights, verify_weights_many

__all__ = ["stats", "Verdict", "make_verdict", "state_dict_sha256", "normalize", "verify",
           "verify_weights", "verify_weights_many"]
