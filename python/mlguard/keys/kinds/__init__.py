"""Trigger kinds, one file each (see base.py for how to add one). Importing this package
registers them, in the order users see them."""

from . import abstract, noise, content, unrelated, custom  # noqa: F401, I001  (registers them)
from .base import KINDS, TriggerKind, get_kind, kind_names, names_where, register_kind

__all__ = ["KINDS", "TriggerKind", "get_kind", "kind_names", "names_where", "register_kind"]
