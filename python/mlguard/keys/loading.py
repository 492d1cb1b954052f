"""Reading any mlguard key file into the key object of its scheme."""

from __future__ import annotations

import os

from . import keyfile
from .metadata import with_metadata
from .trigger_key import SCHEME as TRIGGER_SCHEME
from .trigger_key import TriggerKey
from .weight_key import SCHEME as WEIGHT_SCHEME
from .weight_key import WeightKey

_KINDS = {TRIGGER_SCHEME: TriggerKey, WEIGHT_SCHEME: WeightKey}


def load_key(path: str | os.PathLike):
    """Reads any mlguard key file; a corrupt, tampered or unknown file raises ValueError.

    The key records its label (None in files without one) and the file's absolute `path`."""
    body, meta = keyfile.read_key_file_meta(path)
    scheme = body.get("scheme")
    if scheme not in _KINDS:
        raise ValueError(f"key file '{os.fspath(path)}': unknown scheme {scheme!r}")
    try:
        key = _KINDS[scheme].from_body(body)
    except ValueError as e:
        raise ValueError(f"key file '{os.fspath(path)}': {e}") from None
    return with_metadata(key, label=meta.get("label"), path=path)
