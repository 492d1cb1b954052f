"""Run every example notebook at one scale and record what it measured in examples/RESULTS.md.

    python examples/reproduce.py                 # full scale, on a GPU when one is present
    python examples/reproduce.py --scale smoke   # the CI scale, minutes on a CPU

Each notebook runs in a fresh kernel (notebook_runner.py); the executed copies and each
notebook's outputs (keys, models, reports) go to --executed/<time>-<scale>/. A section is
appended to RESULTS.md per run: the date, scale, device and time, then each notebook's
table (our figure next to the published one, with its source) and its checks. A notebook that fails is recorded as failed, with its error, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
import traceback
from pathlib import Path

import nbformat
import torch

import notebook_runner

RESULTS = notebook_runner.EXAMPLES / "RESULTS.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colors in IPython tracebacks
HEADER = """# Example results

Written by `make reproduce` (examples/reproduce.py): every notebook in examples/, run in a
fresh kernel. Each section is one run, with the device it ran on and its wall time; every
"ours" figure was measured in that run, and every "published" figure is quoted from the
source named beside it.
"""


def section(scale: str, runs: list[tuple[Path, dict | None, str | None, float]]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    lines = [f"## {when} — {scale} scale, {'GPU: ' + gpu if gpu else 'no GPU (CPU only)'}", ""]
    for path, res, error, seconds in runs:
        lines.append(f"### {path.name}")
        lines.append("")
        if res is None:
            error = ANSI.sub("", error).strip()[-2000:]
            lines += [f"FAILED after {seconds:.0f} s:", "", "```", error, "```", ""]
            continue
        lines += [f"Device: {res['device']}. Data: {res.get('dataset', '-')}. Notebook time "
                  f"{res['seconds']} s (with kernel start {seconds:.0f} s).", "",
                  "| | ours | published | source |", "|---|---|---|---|"]
        lines += [f"| {r['what']} | {r['ours']} | {r['published']} | {r['source']} |"
                  for r in res["rows"]]
        lines += [""] + [f"- [{'x' if ok else ' '}] {what}" for what, ok in res["checks"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=notebook_runner.SCALES, default="full")
    p.add_argument("--device", default=None, help="MLGUARD_DEVICE for the notebooks "
                   "(default: cuda when available)")
    p.add_argument("--executed", default="runs/examples", help="folder for executed notebooks")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = p.parse_args(argv)
    # One folder per run: a notebook never replaces the key of an earlier run (it refuses to).
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    executed = Path(args.executed).resolve() / f"{stamp}-{args.scale}"  # kernels run in examples/
    executed.mkdir(parents=True, exist_ok=False)
    env = {"MLGUARD_DEVICE": args.device} if args.device else {}
    runs = []
    for path in notebook_runner.notebooks():
        print(f"{path.name}: running at {args.scale} scale...", flush=True)
        start = time.perf_counter()
        out = executed / path.stem
        try:
            nb = notebook_runner.execute(path, args.scale, env={**env, "MLGUARD_OUT": str(out)},
                                         timeout=args.timeout)
            res, error = notebook_runner.results(nb), None
            nbformat.write(nb, executed / path.name)
        except Exception:  # noqa: BLE001 - one failing notebook is recorded, the rest run
            res, error = None, traceback.format_exc()
        runs.append((path, res, error, time.perf_counter() - start))
        print(f"  {'failed' if res is None else 'done'} in {runs[-1][3]:.0f} s", flush=True)
    results = Path(args.results)
    text = results.read_text() if results.exists() else HEADER
    results.write_text(text.rstrip("\n") + "\n\n" + section(args.scale, runs) + "\n")
    print(f"appended to {results}")
    failed = [p.name for p, res, _, _ in runs if res is None or not all(res["checks"].values())]
    if failed:
        print(f"failed or with failed checks: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
