"""The `mlguard` command line."""

from __future__ import annotations

import argparse
import os
import sys

from . import demo, fingerprint, keys, ownership, protect, scan, verify
from . import evaluate  # the `evaluate` verb


def _info(_args) -> int:
    from .._extension import build_info
    for k, v in build_info().items():
        print(f"{k:>16}: {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(sub)
    p = sub.add_parser("info", help="what this mlguard was built with")
    p.set_defaults(func=_info)
    scan.add_parser(sub)
    verify.add_parser(sub)
    keys.add_parser(sub)
    fingerprint.add_parser(sub)
    protect.add_parsers(sub)
    ownership.add_parsers(sub)
    evaluate.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def console_main() -> None:
    """The `mlguard` console script. Like `python -m mlguard`, it puts the current folder on
    sys.path, so that `--arch mymodule:Net` imports mymodule.py from where you run it."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
