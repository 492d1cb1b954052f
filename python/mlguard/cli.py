"""The `mlguard` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from . import demo
    results = demo.run(epochs=args.epochs, device=args.device, out=args.out,
                       train_limit=args.train_limit)
    marked, clean = results
    checks = {
        "watermarked model detected with p < 1e-6": marked.verdict.detected,
        "clean model not detected": not clean.verdict.detected,
        "test accuracies within 1 point": abs(marked.accuracy - clean.accuracy) <= 0.01,
    }
    for what, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if all(checks.values()) else 1


def _info(_args) -> int:
    import mlguard
    for k, v in mlguard.build_info().items():
        print(f"{k:>16}: {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="watermark a Fashion-MNIST CNN and verify it and a clean twin")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--out", default="runs/demo", help="folder for models, key and verdicts")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N images")
    p.set_defaults(func=_demo)
    p = sub.add_parser("info", help="what this mlguard was built with")
    p.set_defaults(func=_info)
    from .protect_cli import add_parsers as add_protect_parsers
    from .scan_cli import add_parser as add_scan_parser
    add_scan_parser(sub)
    add_protect_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
