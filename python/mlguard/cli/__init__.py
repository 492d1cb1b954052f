"""The `mlguard` command line: one module per verb group (main.py builds the parser)."""

from .main import console_main, main

__all__ = ["console_main", "main"]
