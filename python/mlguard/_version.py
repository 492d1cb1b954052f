"""Single source of the mlguard version (kept import-free to avoid cycles)."""

__version__ = "0.2.0"
