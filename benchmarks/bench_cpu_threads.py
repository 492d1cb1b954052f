"""Every mlguard CPU op with 1 and 2 (or --threads) threads: median time and speedup, and
whether the outputs are bit-identical (they must be: the split never changes a sum's order
for the exact ops, and each float output element is computed by one thread).

    python benchmarks/bench_cpu_threads.py [--threads 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mlguard
from mlguard.ops import (abstract_triggers, augment_batch, keyed_projection, keyed_projection_batched,
                         keyed_projection_sums, keyed_words, mix_triggers)


def cases():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 250_000, generator=g)
    seeds = torch.tensor([11, -22, 33, 44])
    v = torch.randn(1_000_000, generator=g)
    grad = torch.randn(256, generator=g)
    images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=g)
    index = torch.randint(0, 1000, (512,), generator=g)
    offsets = torch.randint(0, 9, (512, 2), generator=g)
    flip = torch.rand(512, generator=g) < 0.5
    x = torch.randn(256, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    bank = torch.rand(100, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (100,), generator=g)
    m, s = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    return {
        "keyed_projection_sums 8 x 250k, 4 keys x 256 bits":
            lambda: keyed_projection_sums(w, seeds, 256)[0],
        "keyed_projection_batched (v1) 8 x 250k, 4 keys x 256 bits":
            lambda: keyed_projection_batched(w, seeds, 256, 1),
        "keyed_projection (training forward) 1M, 256 bits": lambda: keyed_projection(v, 5, 256),
        "_keyed_projection_backward 1M, 256 bits":
            lambda: torch.ops.mlguard._keyed_projection_backward(grad, 5, 1_000_000),
        "augment_batch 512 x 3 x 32 x 32": lambda: augment_batch(images, index, offsets, flip, 4, m, s),
        "mix_triggers 256 + 64 x 3 x 32 x 32":
            lambda: mix_triggers(x, y, bank, labels, 3, 64, 9, 4, True, m, s)[0],
        "abstract_triggers 256 x 3 x 32 x 32":
            lambda: abstract_triggers(torch.arange(256), 7, (3, 32, 32)),
        "keyed_words 1M": lambda: keyed_words(torch.arange(1_000_000), 7, 1),
    }


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def timed(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    info = mlguard.build_info()
    print(f"cpu_parallel={info['cpu_parallel']} cpu_projection_kernel="
          f"{info['cpu_projection_kernel']} torch={torch.__version__}")
    print(f"| op | 1 thread (ms) | {args.threads} threads (ms) | speedup | bits identical |")
    print("|---|---|---|---|---|")
    for name, fn in cases().items():
        torch.set_num_threads(1)
        t1, one = timed(fn, args.reps)
        torch.set_num_threads(args.threads)
        tn, many = timed(fn, args.reps)
        same = one.dtype == many.dtype and torch.equal(_bytes(one), _bytes(many))
        print(f"| {name} | {t1 * 1e3:.1f} | {tn * 1e3:.1f} | {t1 / tn:.2f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
