"""Commit and reveal: `key.commitment()` is published when a model is released; it binds the
key and hides it. `reveal(key)` gives the opening (the key body: parameters, secret and
nonce) and `check_opening(commitment, opening)` recomputes the commitment from it.

Revealing a key burns it: whoever holds the opening can regenerate the triggers, so show it
only to the expert or court that must check the claim.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from ..keys import keyfile

HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def reveal(key: Any) -> dict:
    """The opening of `key`'s commitment: a copy of its body (scheme, parameters, secret,
    nonce). Works for any key with `to_body()` (trigger keys, weight keys) or a body dict.

    The opening contains the secret; see the module docstring before sharing it.
    """
    body = key.to_body() if hasattr(key, "to_body") else key
    if not isinstance(body, Mapping):
        raise TypeError(f"key must have to_body() or be a key body dict, got "
                        f"{type(key).__name__}")
    _check_body(body, "key")
    # A JSON round trip gives a deep, plain-data copy (and rejects what cannot be committed).
    return json.loads(keyfile.canonical_json(dict(body)))


def _check_body(body: Mapping, name: str) -> None:
    missing = [f for f in ("scheme", "secret", "nonce") if not isinstance(body.get(f), str)]
    if missing:
        raise ValueError(f"{name} must be a key body with str fields 'scheme', 'secret' and "
                         f"'nonce'; missing or not str: {missing}")


def check_opening(commitment: str, opening: Mapping) -> bool:
    """True if `opening` (from reveal) is the key that `commitment` was made from."""
    if not isinstance(commitment, str) or not HEX64.fullmatch(commitment):
        raise ValueError(f"commitment must be 64 hex digits, got {str(commitment)[:70]!r}")
    if not isinstance(opening, Mapping):
        raise TypeError(f"opening must be a dict (from reveal), got {type(opening).__name__}")
    _check_body(opening, "opening")
    recomputed = keyfile.commitment(dict(opening))
    return hmac.compare_digest(recomputed, commitment.lower())


def commitments_of(keys: Any) -> list[dict]:
    if isinstance(keys, (str, Mapping)) or hasattr(keys, "commitment"):
        keys = [keys]
    out = []
    for k in keys:
        if isinstance(k, str):
            if not HEX64.fullmatch(k):
                raise ValueError(f"keys: commitment must be 64 hex digits, got {k[:70]!r}")
            out.append({"scheme": None, "commitment": k.lower()})
        elif hasattr(k, "commitment") and hasattr(k, "to_body"):
            out.append({"scheme": k.to_body().get("scheme"), "commitment": k.commitment()})
        elif isinstance(k, Mapping):
            _check_body(k, "keys")
            out.append({"scheme": k["scheme"], "commitment": keyfile.commitment(dict(k))})
        else:
            raise TypeError(f"keys must hold keys, key bodies or commitment strings, got "
                            f"{type(k).__name__}")
    if not out:
        raise ValueError("keys must not be empty")
    return out
