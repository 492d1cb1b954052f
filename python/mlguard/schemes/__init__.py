"""Watermarking and fingerprinting schemes behind one interface (schemes/base.py).

Each scheme is one module here that registers itself. The built-in ones are listed in
catalog.py and imported on the registry's first use (base.SCHEMES), not here: library modules
import ``schemes.base`` at their top level, and the scheme modules import the library in
turn, so importing them here would make every import of the library circular.
"""

import importlib

from .base import (SCHEMES, Embedding, Reading, ReadOptions, Scheme, Suspect,
                   conservative_chance, get_scheme, register_scheme, scheme_names, scheme_of)
from .catalog import BUILTIN

__all__ = ["SCHEMES", "Embedding", "Reading", "ReadOptions", "Scheme", "Suspect",
           "conservative_chance", "get_scheme", "register_scheme", "scheme_names", "scheme_of"]


def __getattr__(name: str):
    """mlguard.schemes.<module> for a built-in scheme, imported on first use."""
    if name in {module for module, _, _ in BUILTIN.values()}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
