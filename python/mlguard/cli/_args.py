"""Argument helpers shared by the verb modules."""

from __future__ import annotations

import argparse


def add_progress_arguments(p: argparse.ArgumentParser) -> None:
    """--progress / --no-progress (default None: a bar only on a terminal or in Jupyter)."""
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar (default: only on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
