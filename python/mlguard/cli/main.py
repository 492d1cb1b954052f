"""The `mlguard` command line."""

from __future__ import annotations

import argparse
import os
import sys

# Each verb module builds its parser without importing torch; handlers import what they run.
from . import demo_verb, evaluate, fingerprint, keys, ownership, protect, scan, verify


def _info(_args) -> int:
    from .._extension import build_info
    for k, v in build_info().items():
        print(f"{k:>16}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `mlguard` command's parser, every verb in it; building it imports no torch (the
    verbs import what they need when they run), so `--help` is fast."""
    parser = argparse.ArgumentParser(
        prog="mlguard",
        description="Watermark models while training them and prove ownership with an exact "
                    "p-value. `mlguard COMMAND --help` gives each command's options.",
        epilog="exit status 2 is always a bad argument or an input that cannot be used, "
               "named in the message.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_verb.add_parser(sub)
    p = sub.add_parser("info", help="what this mlguard was built with")
    p.set_defaults(func=_info)
    scan.add_parser(sub)
    verify.add_parser(sub)
    keys.add_parser(sub)
    fingerprint.add_parser(sub)
    protect.add_parsers(sub)
    ownership.add_parsers(sub)
    evaluate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `mlguard` command on `argv` (default: sys.argv[1:]); returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # verbs that can resume say how themselves (scan, evaluate)
        print(f"\nmlguard {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mlguard verify ... | head`: the reader left; no traceback
        try:  # so that the interpreter's last flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout with no file descriptor (captured)
            pass
        return 141  # 128 + SIGPIPE, as a shell tool killed by it


def console_main() -> None:
    """The `mlguard` console script. Like `python -m mlguard`, it puts the current folder on
    sys.path, so that `--arch mymodule:Net` imports mymodule.py from where you run it."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
