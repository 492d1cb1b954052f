"""Wall time of `python -m mlguard ... --help` in a fresh interpreter (issue 24).

    python benchmarks/bench_cli_start.py --tree /path/to/old/python --tree python

Each --tree is a source tree's python/ folder, put on PYTHONPATH; median (min, max) of
--runs runs per command. What keeps the start fast is tests/cli/test_cli_start.py (it counts
imports); this only measures what that buys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["scan", "--help"], ["key", "new", "trigger", "--help"])


def seconds(tree: str, argv: list[str], runs: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlguard", *argv], env=env, capture_output=True,
                       check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, help="a python/ source folder")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(f"load average {os.getloadavg()}")
    for tree in args.tree:
        for argv in COMMANDS:
            t = seconds(tree, argv, args.runs)
            print(f"{tree:28} {' '.join(argv):24} median {statistics.median(t):.2f} s "
                  f"(min {min(t):.2f}, max {max(t):.2f})")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
