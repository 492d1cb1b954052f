"""Argument helpers shared by the verb modules."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable


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


def add_arch_arguments(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    """--arch MODULE:FACTORY and --arch-kwargs JSON, the same in every verb; read them with
    arch_kwargs() / build_arch()."""
    p.add_argument("--arch", required=required, default=None, metavar="MODULE:FACTORY",
                   help=f"{help}, e.g. mlguard.cli.demo:small_cnn")
    p.add_argument("--arch-kwargs", default=None, metavar="JSON",
                   help='keyword arguments for the factory, e.g. \'{"num_classes": 10}\'')


def arch_kwargs(arch: str | None, text: str | None) -> dict | None:
    """--arch-kwargs as a dict (None when not given); ValueError (exit 2) naming the problem."""
    if text is None:
        return None
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--arch-kwargs is not valid JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--arch-kwargs must be a JSON object, got {text}")
    if arch is None:
        raise ValueError("--arch-kwargs needs --arch")
    return kwargs


def build_arch(arch: str | None, text: str | None):
    """The network --arch and --arch-kwargs build, or None without --arch."""
    from ..files.model import resolve_arch
    kwargs = arch_kwargs(arch, text)
    return None if arch is None else resolve_arch(arch, kwargs)()


def one_of(values: Callable[[], Iterable[str]], what: str) -> Callable[[str], str]:
    """An argparse `type` that accepts one of `values()`, computed only when a value is parsed:
    `choices=` would be listed (and so imported) by `--help`, which must not import torch."""
    def check(text: str) -> str:
        allowed = tuple(values())
        if text not in allowed:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r} (choose from {', '.join(map(repr, allowed))})")
        return text
    check.__name__ = what  # argparse names the type in its other messages
    return check
