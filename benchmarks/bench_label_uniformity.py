"""How often honestly drawn uniform labels are refused by TriggerKey.from_images (issue 18).

The plausibility check (mlguard.keys.user_labels) refuses hand-made label sets whose
chi-square goodness-of-fit p-value against uniform is below LEVEL (1e-3). For labels that
really are uniform draws, the refusal rate must be about LEVEL, not more: this draws many
uniform label sets per (size, classes) and counts refusals, with the time per check.
Prints a table, then the same as JSON.

    PYTHONPATH=python python benchmarks/bench_label_uniformity.py [--scale 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from mlguard.keys.user_labels import _MIN_EXPECTED, LEVEL, uniformity_p_value

# (labels, classes, label sets drawn): both the simulated and the scipy regime.
CASES = [(40, 10, 4_000), (100, 10, 4_000), (100, 1000, 2_000), (200, 10, 100_000),
         (2000, 100, 50_000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the sets drawn")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    results = []
    print(f"{'labels':>6} {'classes':>7} {'p-value':>10} {'sets':>7} {'refused':>8} "
          f"{'rate':>9} {'± 2 s.e.':>9} {'ms/check':>8}")
    for n, classes, sets in CASES:
        sets = max(1, int(sets * args.scale))
        start = time.perf_counter()
        refused = sum(
            uniformity_p_value(np.bincount(rng.integers(0, classes, n), minlength=classes))
            < LEVEL for _ in range(sets))
        ms = (time.perf_counter() - start) / sets * 1e3
        rate = refused / sets
        how = "scipy" if n / classes >= _MIN_EXPECTED else "simulated"
        spread = 2 * math.sqrt(LEVEL * (1 - LEVEL) / sets)
        print(f"{n:>6} {classes:>7} {how:>10} {sets:>7} {refused:>8} {rate:>9.2e} "
              f"{spread:>9.1e} {ms:>8.2f}", flush=True)
        results.append(dict(labels=n, classes=classes, p_value=how, sets=sets,
                            refused=refused, rate=rate, ms_per_check=round(ms, 3)))
    print(json.dumps({"level": LEVEL, "results": results}))


if __name__ == "__main__":
    main()
