"""Argument helpers shared by the verb modules."""

from __future__ import annotations

import argparse
import os


def existing_output(path: str, force: bool) -> str | None:
    """Why `path` may not be written (it exists and --force was not given), or None."""
    if os.path.lexists(path) and not force:
        return f"'{path}' exists; refusing to overwrite it (use --force)"
    return None


def refuse_existing(path: str, force: bool) -> None:
    """Raises ValueError (exit 2 in the verbs) if `path` exists and --force was not given."""
    problem = existing_output(path, force)
    if problem:
        raise ValueError(problem)


def add_progress_arguments(p: argparse.ArgumentParser) -> None:
    """--progress / --no-progress (default None: a bar only on a terminal or in Jupyter)."""
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar (default: only on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
