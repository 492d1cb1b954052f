"""`mlguard scan`: check model files against keys from the command line.

Wired into `mlguard` by cli/main.py (``scan.add_parser(sub)``); also runnable on its own,
which is how torchrun starts it on every rank:

    torchrun --nproc_per_node=8 -m mlguard.cli.scan suspects/ --keys keys/ --arch ...
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from . import _reference
from ._args import add_arch_arguments, add_progress_arguments, arch_kwargs, existing_output

EPILOG = """exit status:
  0  every file was checked and nothing was detected
  1  at least one detection
  2  bad arguments or configuration, found before the scan starts (the architecture is
     built once with --arch-kwargs and every key's triggers are run through it; --out and
     --report folders must exist and be writable)
  3  nothing detected, but some files could not be checked (corrupt, not a model, wrong
     architecture, NaN weights, unsafe pickles): the first errors are printed; --out has all
  130 interrupted (Ctrl-C); rows of the files already checked are kept in the --journal
Put PATHs before --keys: every argument after --keys is taken as a key."""
ERRORS_SHOWN = 5  # error rows printed in the summary
DETECTIONS_SHOWN = 20  # detections printed in the summary


def add_parser(subparsers) -> None:
    """Adds the `scan` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "scan", help="check many model files against many keys (p-values, report)",
        description="Check every model file (folders recursively) against every key. "
                    "Detected means the Bonferroni-adjusted p-value is below --alpha.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="model files or folders")
    p.add_argument("--keys", nargs="+", required=True, metavar="KEY",
                   help="key files, or folders of *.key files (put PATHs before --keys)")
    add_arch_arguments(p, "builds the network for state_dict files (needed for trigger-set "
                          "keys)")
    p.add_argument("--journal", default=None, metavar="FILE",
                   help="SQLite journal: commit rows as they come, resume after a crash")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="write all rows: results.json or results.csv (repeatable)")
    p.add_argument("--report", action="append", default=[], metavar="FILE",
                   help="write report.html (heatmap + tables) or report.png (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--alpha", type=float, default=1e-6,
                   help="significance level for the whole scan (default 1e-6)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="trigger images per forward pass (default 1024 on CUDA, 64 on the CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="reader threads (default min(8, CPUs))")
    p.add_argument("--memory-cap", type=_byte_size, default=None, metavar="SIZE",
                   help="model data held in memory at once, e.g. 512M or 8G (default 4G): "
                        "files read ahead and decoded models waiting for a batched check; "
                        "peak memory stays within it + one model + a constant")
    _reference.add_argument(p)
    p.add_argument("--force", action="store_true",
                   help="replace existing --out and --report files")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="load TorchScript archives (runs code from the files: trusted files only)")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Runs a parsed `scan` command; returns the exit status (see EPILOG)."""
    from ..scan import ScanInterrupted, scan, summary_line, write_report
    from ..scan.pipeline import load_keys
    from ..scan.distributed import from_env

    for target in args.out:
        if not target.lower().endswith((".json", ".csv")):
            return _usage(f"--out must end in .json or .csv, got '{target}'")
    for target in args.report:
        if not target.lower().endswith((".html", ".htm", ".png")):
            return _usage(f"--report must end in .html or .png, got '{target}'")
    for target in args.out + args.report:
        problem = _unwritable(target, args.force)
        if problem:
            return _usage(problem)
    try:
        kwargs = arch_kwargs(args.arch, args.arch_kwargs)
    except ValueError as e:
        return _usage(str(e))
    start = time.perf_counter()
    try:
        keys = load_keys(args.keys)
        reference = _reference.load_per_key(args, kwargs, keys)
        rows = scan(args.paths, keys, arch=args.arch, arch_kwargs=kwargs,
                    device=args.device, journal=args.journal, alpha=args.alpha,
                    batch_size=args.batch_size, workers=args.workers,
                    trust_torchscript=args.trust_torchscript, progress=args.progress,
                    memory_cap=args.memory_cap, reference=reference)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _usage(str(e))
    except KeyboardInterrupt as e:  # ScanInterrupted once the scan has started
        resume = ("rerun with the same --journal to resume" if args.journal else
                  "nothing was kept: use --journal FILE to make a scan resumable")
        where = (f" after {e.checked} of {e.total} files"
                 if isinstance(e, ScanInterrupted) else "")
        print(f"\nmlguard scan: interrupted{where}; {resume}", file=sys.stderr)
        return 130
    if from_env().rank != 0:  # under torchrun, rank 0 writes the outputs
        return 0
    for target in args.out + args.report:
        write_report(rows, target, args.alpha)
    _print_detections(rows, all_shown=not args.out)
    if not (args.progress or (args.progress is None and sys.stderr.isatty())):
        print(summary_line(rows, time.perf_counter() - start), file=sys.stderr)  # else scan did
    _print_errors(rows)
    if any(r["detected"] for r in rows):
        return 1
    return 3 if any(r["error"] is not None for r in rows) else 0


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_size(text: str) -> int:
    """'512M', '8G', '1.5G' or a number of bytes -> bytes (K, M, G, T are powers of 1024)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        size = int(float(value[:len(value) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):  # not a number, inf
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 8G, got '{text}'")
    return size


def _unwritable(target: str, force: bool) -> str | None:
    """Why `target` cannot be written (checked before the scan), or None."""
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        return f"cannot write '{target}': folder '{folder}' does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write '{target}': folder '{folder}' is not writable"
    if os.path.isdir(target):
        return f"cannot write '{target}': it is a folder"
    return existing_output(target, force)


def _print_errors(rows: list[dict]) -> None:
    """The first error rows (one per file), so that a failed check is never silent."""
    seen: dict[str, str] = {}
    for r in rows:
        if r["error"] is not None and r["path"] not in seen:
            seen[r["path"]] = r["error"]
    for path, error in list(seen.items())[:ERRORS_SHOWN]:
        print(f"ERROR     {path}: {error}", file=sys.stderr)
    if len(seen) > ERRORS_SHOWN:
        print(f"... and {len(seen) - ERRORS_SHOWN} more files with errors (--out lists all)",
              file=sys.stderr)


def _print_detections(rows: list[dict], all_shown: bool) -> None:
    """One line per detection, naming the file and the key (label, else file stem, and id);
    with --out the first DETECTIONS_SHOWN (the file lists all)."""
    from ..scan.rows import key_name
    from ..verification.stats import format_p
    detections = [r for r in rows if r["detected"]]
    shown = detections if all_shown else detections[:DETECTIONS_SHOWN]
    for r in shown:
        p = format_p(r["log10_adjusted_p_value"] * math.log(10.0))
        print(f"DETECTED  {r['path']}  key {key_name(r)} ({r['key_id']})  "
              f"{r['matches']}/{r['total']}  adjusted p = {p}")
    if len(shown) < len(detections):
        print(f"... and {len(detections) - len(shown)} more detections (--out lists all)")


def _usage(message: str) -> int:
    print(f"mlguard scan: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlguard")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "scan":  # `python -m mlguard.cli.scan PATHS...`
        argv = ["scan", *argv]
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
