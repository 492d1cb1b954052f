"""Reading any mlguard key file into the key object of its scheme."""

from __future__ import annotations

import os

from ..schemes.base import SCHEMES
from . import keyfile
from .metadata import with_metadata


def load_key(path: str | os.PathLike):
    """Reads any mlguard key file (of any registered scheme: its body's "scheme" field picks
    the key class); a corrupt, tampered or unknown file raises ValueError.

    The key records its label (None in files without one) and the file's absolute `path`."""
    body, meta = keyfile.read_key_file_meta(path)
    scheme = body.get("scheme")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"key file '{os.fspath(path)}': unknown scheme {scheme!r} (known: "
                         f"{', '.join(SCHEMES)})")
    try:
        key = SCHEMES[scheme].key_type.from_body(body)
    except ValueError as e:
        raise ValueError(f"key file '{os.fspath(path)}': {e}") from None
    return with_metadata(key, label=meta.get("label"), path=path)
