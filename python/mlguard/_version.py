"""Single source of the mlguard version (kept import-free to avoid cycles)."""

__version__ = "0.2.0"
"""mlguard's version (the one place it is written; pyproject.toml reads it)."""
