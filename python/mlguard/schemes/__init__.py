"""Watermarking and fingerprinting schemes behind one interface (schemes/base.py).

Each scheme is one module here, imported below so that it registers itself."""

from .base import (SCHEMES, Embedding, Reading, ReadOptions, Scheme, Suspect,
                   conservative_chance, get_scheme, register_scheme, scheme_names, scheme_of)

__all__ = ["SCHEMES", "Embedding", "Reading", "ReadOptions", "Scheme", "Suspect",
           "conservative_chance", "get_scheme", "register_scheme", "scheme_names", "scheme_of"]
from . import deepsigns  # noqa: F401  (registers itself)
from . import deepmarks  # noqa: F401  (registers itself)
