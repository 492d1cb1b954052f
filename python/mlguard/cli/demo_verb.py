"""The `demo` verb: its parser, torch-free (`mlguard demo --help` imports no torch), and
its handler, which runs cli/demo.py."""

from __future__ import annotations

import argparse

# the demo's defaults (here, so that --help needs no torch; cli/demo.py uses them)
EPOCHS, PER_BATCH, BATCH_SIZE = 2, 16, 128


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `demo` subcommand to the `mlguard` command's subparsers."""
    p = subparsers.add_parser("demo", help="watermark a Fashion-MNIST CNN and verify it and a "
                              "clean twin")
    p.add_argument("--epochs", type=int, default=EPOCHS,
                   help=f"training epochs for each of the two models (default {EPOCHS})")
    p.add_argument("--per-batch", type=int, default=PER_BATCH,
                   help=f"triggers appended to each batch of {BATCH_SIZE} (default {PER_BATCH}; "
                        "fewer and the watermark may not be learned in the epochs given)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--out", default="runs/demo", help="folder for models, key and verdicts")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N of the 60,000 training images (default all; "
                        "too few and the watermark is not learned)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from .demo import run
    marked, clean = run(epochs=args.epochs, device=args.device, out=args.out,
                        train_limit=args.train_limit, per_batch=args.per_batch)
    checks = {
        "watermarked model detected with p < 1e-6": marked.verdict.detected,
        "clean model not detected": not clean.verdict.detected,
        "test accuracies within 1 point": abs(marked.accuracy - clean.accuracy) <= 0.01,
    }
    for what, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if all(checks.values()) else 1
