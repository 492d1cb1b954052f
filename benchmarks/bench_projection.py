"""Keyed projection y = R w: mlguard (R regenerated in the kernel) vs the plain-PyTorch way
(R materialized once), side by side, for the two uses:

- read: what a verdict computes (mlguard: the exact integer sums of keyed_projection_sums;
  plain: `X @ w` without autograd);
- train: forward + backward of the training path (mlguard: keyed_projection; plain: `X @ w`
  with autograd).

Reports median time and peak extra memory per (M weights, T bits). The materialized way is
skipped where X would not fit in --max-x-gb. Correctness is checked before timing.

    python benchmarks/bench_projection.py                    # CUDA if present, full grid
    python benchmarks/bench_projection.py --device cpu --sizes 36864,2359296 --bits 64,256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import mlguard
from mlguard.ops import keyed_projection
from mlguard.ops.keyed_projection import keyed_projection_sums

SEED = 0x5EED


class Memory:
    """Peak memory above the level at start: the CUDA allocator's stats, or the process's
    peak RSS on the CPU (reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device

    def _rss(self, field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = self._rss("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return self._rss("VmHWM") - self.base


CPU_MS: list[float] = []  # process CPU time of the last `timed` call (CPU only), median


def timed(fn, device, reps: int) -> float:
    times, cpu = [], []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t, c = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - c) * 1e3)
    CPU_MS[:] = [statistics.median(cpu)] if cpu else []
    return statistics.median(times)


def materialized_matrix(bits: int, numel: int, device) -> torch.Tensor:
    """X as a user stores it today (Uchida et al.): random signs / sqrt(M), float32."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 2, (bits, numel), generator=g, device=device, dtype=torch.int8)
    return (x.float() * 2 - 1) / numel ** 0.5


def case(numel: int, bits: int, device, reps: int, max_x_gb: float) -> dict:
    w = torch.randn(numel, device=device, requires_grad=True)
    g = torch.randn(bits, device=device)
    seeds = torch.tensor([SEED], device=device)
    row = {"M": numel, "T": bits}

    def read():
        return keyed_projection_sums(w.detach().reshape(1, -1), seeds, bits)

    def train():
        w.grad = None
        keyed_projection(w, SEED, bits).backward(g)

    # correctness: the gradient is R^T g, so g . (R w) == w . grad; the read agrees with y
    train()
    y = keyed_projection(w.detach(), SEED, bits)
    assert torch.allclose((g * y).sum(), (w.detach() * w.grad).sum(), rtol=1e-3, atol=1e-3)
    sums, shift = read()
    y_read = sums[0, 0].double() * 2.0 ** int(shift[0]) / numel ** 0.5
    assert torch.allclose(y_read, y.double(), rtol=1e-3, atol=1e-3)
    mem = Memory(device)
    for name, fn in (("read", read), ("train", train)):
        fn()
        mem.start()
        row[f"{name}_ms"] = timed(fn, device, reps)
        row[f"{name}_cpu_ms"] = CPU_MS[0] if CPU_MS else None  # all threads together
        row[f"{name}_extra_MB"] = mem.peak() / 2**20

    if bits * numel * 4 / 2**30 <= max_x_gb:
        mem.start()
        x = materialized_matrix(bits, numel, device)

        def plain_read():
            with torch.no_grad():
                return x @ w

        def plain_train():
            w.grad = None
            (x @ w).backward(g)

        for name, fn in (("read", plain_read), ("train", plain_train)):
            fn()
            row[f"plain_{name}_ms"] = timed(fn, device, reps)
            row[f"plain_{name}_cpu_ms"] = CPU_MS[0] if CPU_MS else None
        row["plain_extra_MB"] = mem.peak() / 2**20
        del x
    else:
        row["plain_read_ms"] = row["plain_train_ms"] = row["plain_extra_MB"] = None
        row["plain_read_cpu_ms"] = row["plain_train_cpu_ms"] = None
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--sizes", default=None,
                   help="weights M (default 36864,2359296,16777216; on the CPU without the last)")
    p.add_argument("--bits", default=None, help="bits T (default 64,256,1024; CPU 64,256)")
    p.add_argument("--reps", type=int, default=None, help="default 20 on CUDA, 3 on the CPU")
    p.add_argument("--max-x-gb", type=float, default=None,
                   help="largest materialized X to try (default 60 on CUDA, 4 on the CPU)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    reps = args.reps or (20 if cuda else 3)
    sizes = args.sizes or ("36864,2359296,16777216" if cuda else "36864,2359296")
    bits = args.bits or ("64,256,1024" if cuda else "64,256")
    max_x_gb = args.max_x_gb if args.max_x_gb is not None else (60.0 if cuda else 4.0)
    rows = [case(m, t, device, reps, max_x_gb) for m in map(int, sizes.split(","))
            for t in map(int, bits.split(","))]
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"keyed projection, {name}, torch {torch.__version__}, mlguard {mlguard.__version__}, "
          f"median of {reps}; read = exact sums (plain: X @ w), train = forward + backward")
    print(f"{'M':>10} {'T':>5} {'read ms':>9} {'plain':>9} {'speedup':>8} {'train ms':>9} "
          f"{'plain':>9} {'speedup':>8} {'extra MB':>9} {'plain MB':>9}")
    for r in rows:
        if r["plain_read_ms"] is None:
            print(f"{r['M']:>10} {r['T']:>5} {r['read_ms']:>9.2f} {'-':>9} {'-':>8} "
                  f"{r['train_ms']:>9.2f} {'-':>9} {'-':>8} "
                  f"{max(r['read_extra_MB'], r['train_extra_MB']):>9.1f} (X does not fit)")
            continue
        print(f"{r['M']:>10} {r['T']:>5} {r['read_ms']:>9.2f} {r['plain_read_ms']:>9.2f} "
              f"{r['plain_read_ms'] / r['read_ms']:>7.2f}x {r['train_ms']:>9.2f} "
              f"{r['plain_train_ms']:>9.2f} {r['plain_train_ms'] / r['train_ms']:>7.2f}x "
              f"{max(r['read_extra_MB'], r['train_extra_MB']):>9.1f} {r['plain_extra_MB']:>9.1f}")
    if not cuda:  # on a shared machine wall time includes waiting for a core
        print("CPU time (ms, all threads): " + "; ".join(
            f"M={r['M']} T={r['T']}: read {r['read_cpu_ms']:.0f} (plain "
            f"{r['plain_read_cpu_ms'] or float('nan'):.0f}), train {r['train_cpu_ms']:.0f} "
            f"(plain {r['plain_train_cpu_ms'] or float('nan'):.0f})" for r in rows))
        print(f"load average at the end: {open('/proc/loadavg').read().split()[:3]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
