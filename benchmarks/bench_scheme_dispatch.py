"""Issue 19: does reading through the scheme registry cost anything? Times mlguard.scan
(trigger keys: one forward per model for all keys; weight keys: one batched projection per
64 models) and mlguard.verify per (model, key) on small Fashion-MNIST CNNs, with whatever
mlguard is on PYTHONPATH, and prints the rows' digest so that two trees can be compared
(the digest must be equal: same matches, same p-values).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_scheme_dispatch.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

import mlguard
from mlguard.cli.demo import small_cnn

ARCH = "mlguard.cli.demo:small_cnn"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=32)
    p.add_argument("--trigger-keys", type=int, default=4)
    p.add_argument("--weight-keys", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.models):
            torch.manual_seed(i)
            safetensors.torch.save_file(small_cnn().state_dict(), folder / f"m{i:03d}.safetensors")
        model = small_cnn()
        triggers = [mlguard.TriggerKey.generate(10, 100, (1, 28, 28), secret=bytes([i + 1]) * 32)
                    for i in range(args.trigger_keys)]
        weights = [mlguard.WeightKey.generate(bits=64, targets="auto", model=model,
                                              secret=bytes([100 + i]) * 32)
                   for i in range(args.weight_keys)]
        out = {}
        for name, keys, arch in (("scan trigger keys", triggers, ARCH),
                                 ("scan weight keys", weights, None)):
            times, digest = [], None
            for _ in range(args.repeat):
                start = time.perf_counter()
                rows = mlguard.scan(folder, keys, arch=arch, device="cpu", workers=1,
                                    progress=False)
                times.append(time.perf_counter() - start)
                digest = hashlib.sha256(json.dumps(
                    [(r["path"][-16:], r["matches"], r["total"], r["p_value"]) for r in rows]
                ).encode()).hexdigest()[:16]
            out[name] = (statistics.median(times), digest)
        files = sorted(folder.glob("*.safetensors"))[:8]
        start = time.perf_counter()
        for f in files:
            for k in weights[:8]:
                mlguard.verify(f, k)
        out["verify file x weight key (each)"] = ((time.perf_counter() - start) / 64, "")
    for name, (seconds, digest) in out.items():
        print(f"{name:34s} {seconds * 1000:9.1f} ms  {digest}")


if __name__ == "__main__":
    main()
