"""Watermarking and fingerprinting schemes behind one interface (schemes/base.py).

Each scheme is one module here, imported below so that it registers itself. Library modules
outside this folder import from ``schemes.base`` (never this package) at their top level:
the scheme modules import them in turn.
"""

from .base import (SCHEMES, Embedding, Reading, ReadOptions, Scheme, Suspect,
                   conservative_chance, get_scheme, register_scheme, scheme_names, scheme_of)
from . import trigger_set, weight  # noqa: E402,F401  (register the built-in schemes)

__all__ = ["SCHEMES", "Embedding", "Reading", "ReadOptions", "Scheme", "Suspect",
           "conservative_chance", "get_scheme", "register_scheme", "scheme_names", "scheme_of"]
from . import deepsigns  # noqa: F401  (registers itself)
from . import deepmarks  # noqa: F401  (registers itself)
