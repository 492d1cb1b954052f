"""Keys: the secrets a watermark is regenerated from, their files, HKDF sub-keys and
commitments.

- `keyfile`: the versioned, MAC-protected JSON key file, HKDF sub-seeds, commitments.
- `TriggerKey` (trigger-set watermarks) and `WeightKey` (weight-space watermarks).
- `load_key(path)`: any key file, into the key object of its scheme.
"""

from . import keyfile
from .loading import load_key
from .sampling import keyed_below, keyed_choice
from .trigger_key import TriggerKey
from .weight_key import WeightKey

__all__ = ["keyfile", "load_key", "keyed_below", "keyed_choice", "TriggerKey", "WeightKey"]
