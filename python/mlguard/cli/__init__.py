"""The `mlguard` command line: one module per verb group (main.py builds the parser)."""

from .main import main

__all__ = ["main"]
