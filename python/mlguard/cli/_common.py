"""What the file-protection and ownership verbs share (cli/protect.py, cli/ownership.py),
and the error guard every verb uses.

Secrets never travel on the command line: passphrases come from an environment variable
named with --passphrase-env, or from an interactive prompt; raw encryption keys from a
--key-file. Exit codes: 0 success, 1 a check failed, 2 an error (bad input, wrong
passphrase, unreadable file).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable

from ._args import refuse_existing

OK, FAILED, ERROR = 0, 1, 2


def guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns expected errors into one line on stderr and exit code 2 (messages hold no
    secrets: the library never puts them in exceptions)."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, TypeError, OSError, KeyError) as e:
            print(f"mlguard {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return ERROR
    return run


def passphrase(args: argparse.Namespace, prompt: str, confirm: bool = False) -> str:
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise ValueError(f"--passphrase-env: environment variable {args.passphrase_env} "
                             "is not set or empty")
        return value
    if not sys.stdin.isatty():
        raise ValueError("no passphrase: use --passphrase-env NAME, or run in a terminal to be "
                         "prompted")
    value = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"{prompt} (again): ") != value:
        raise ValueError("the two passphrases differ")
    return value


def load_identity(args: argparse.Namespace):
    """The --identity file (an Identity), opened with its passphrase."""
    from ..ownership.identity import Identity
    return Identity.load(args.identity, passphrase(args, f"passphrase for {args.identity}"))


def add_identity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="identity file (mlguard identity new)")
    p.add_argument("--passphrase-env", metavar="NAME",
                   help="environment variable holding the identity's passphrase "
                        "(default: prompt)")


def add_signed_output_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """--out, the signing identity and --force: what every verb that signs a record takes."""
    p.add_argument("--out", help=out_help)
    add_identity_args(p)
    p.add_argument("--force", action="store_true", help="replace existing output files")


def write_json_output(path: str | None, doc: dict, force: bool = False) -> None:
    """`doc` to `path` (stdout for None or '-'); an existing file only with --force."""
    if path is None or path == "-":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        from ..files.io import write_json
        try:
            write_json(path, doc, overwrite=force)
        except FileExistsError:
            raise ValueError(f"'{path}' exists; refusing to overwrite it (use --force)") from None
        print(f"wrote {path}", file=sys.stderr)


def refuse_outputs(args, *paths: str | None) -> None:
    """Checks every output before any work (a passphrase prompt, a signature, a scan)."""
    for path in paths:
        if path is not None and path != "-":
            refuse_existing(path, args.force)


def report(problems: list[str], ok_message: str) -> int:
    if problems:
        for p in problems:
            print(f"FAILED: {p}")
        return FAILED
    print(ok_message)
    return OK
