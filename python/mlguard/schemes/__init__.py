"""Watermarking and fingerprinting schemes behind one interface (schemes/base.py).

Each scheme is one module here that registers itself. The built-in ones are listed in
catalog.py (torch-free: the command line lists them without importing torch) and imported on
the registry's first use (base.SCHEMES), not here: library modules import ``schemes.base`` at
their top level, and the scheme modules import the library in turn. The names below load
schemes.base on first use.
"""

import importlib
from typing import TYPE_CHECKING

from .catalog import BUILTIN

__all__ = ["SCHEMES", "Embedding", "Reading", "ReadOptions", "Scheme", "Suspect",
           "conservative_chance", "get_scheme", "register_scheme", "scheme_names", "scheme_of"]


def __getattr__(name: str):
    """The interface's names from schemes.base, and mlguard.schemes.<module> for a built-in
    scheme, each imported on first use."""
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.base"), name)
    if name in {module for module, _, _ in BUILTIN.values()}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and the documentation tools read
    from .base import (SCHEMES, Embedding, Reading, ReadOptions, Scheme, Suspect,
                       conservative_chance, get_scheme, register_scheme, scheme_names,
                       scheme_of)
