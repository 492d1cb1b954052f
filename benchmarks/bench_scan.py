"""Bulk verification: mlguard.scan vs the naive Python loop vs merely reading the files.

Generates N ResNet-18 (CIFAR stem) checkpoints with random weights (half safetensors, half
torch.save) and K trigger keys of 100 images, then times, over the same files:

  read    the bound: read every file into memory (threads) and, on CUDA, copy it to the GPU
  naive   what people write today, one model at a time: torch.load / load_file onto the
          device, load_state_dict into one prebuilt model, a forward pass per key, compare
          (fp32, .item() per key)
  scan    mlguard.scan (reader threads, pinned buffers and a side stream on CUDA, one
          forward pass per model for all keys, bf16 autocast on CUDA)

and the same for weight (fingerprint) keys, where "naive" is the per-model loop with the
library's best call, verify_weights_many (all keys of a model in one batched projection),
and the scan batches 64 models per projection.

from the page cache ("warm") and, with --cold, after evicting the files from the page cache
with posix_fadvise(DONTNEED) (no root needed). Results agree before anything is timed.
Prints a table and writes JSON (--json). The generated files are deleted unless --keep.

    python benchmarks/bench_scan.py                           # CUDA: N=1000, K=10, 100 weight keys
    python benchmarks/bench_scan.py --device cpu --models 20 --keys 2 --weight-keys 20 --cold
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import safetensors.torch
import torch
import torchvision

import mlguard
from mlguard.scan import scan
from mlguard.verification import normalize, verify_weights_many

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def resnet18_cifar(num_classes: int = 10) -> torch.nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def generate(folder: Path, n: int) -> list[Path]:
    """N distinct random-weight checkpoints: a base init plus per-model noise."""
    torch.manual_seed(0)
    base = resnet18_cifar().state_dict()
    params = {name for name, _ in resnet18_cifar().named_parameters()}
    paths = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        sd = {k: v + 0.02 * torch.randn(v.shape, generator=g) if k in params else v.clone()
              for k, v in base.items()}
        path = folder / (f"model{i:05d}.safetensors" if i % 2 == 0 else f"model{i:05d}.pt")
        safetensors.torch.save_file(sd, path) if i % 2 == 0 else torch.save(sd, path)
        paths.append(path)
    return paths


def evict(paths: list[Path]) -> None:
    """Drops the files from the page cache so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_bound(paths: list[Path], device: torch.device, workers: int) -> None:
    """Just read the bytes (threads), and on CUDA put them on the GPU."""
    def read(path):
        data = path.read_bytes()
        if device.type == "cuda":
            torch.frombuffer(bytearray(data), dtype=torch.uint8).pin_memory().to(device)
        return len(data)

    with ThreadPoolExecutor(workers) as pool:
        sum(pool.map(read, paths))
    sync(device)


def naive(paths: list[Path], keys, device: torch.device) -> dict:
    """The loop from the issue, with the model built once (generous to the baseline)."""
    model = resnet18_cifar().to(device).eval()
    triggers = []
    for key in keys:
        images, labels = key.materialize(device)
        triggers.append((normalize(images, key), labels))
    out = {}
    with torch.inference_mode():
        for path in paths:
            if path.suffix == ".safetensors":
                sd = safetensors.torch.load_file(path, device=str(device))
            else:
                sd = torch.load(path, weights_only=True, map_location=device)
            model.load_state_dict(sd)
            for key, (x, y) in zip(keys, triggers):
                out[(str(path), key.commitment())] = int((model(x).argmax(1) == y).sum().item())
    return out


def run_scan(paths, keys, device, workers, autocast=None) -> list[dict]:
    return scan(paths, keys, arch=resnet18_cifar, device=device, workers=workers, progress=False,
                autocast=autocast)


def check_agreement(paths, keys, device, workers, reference_fn) -> str:
    """scan (fp32) and the per-model loop give the same matches on the first models."""
    sample = paths[:4]
    rows = run_scan(sample, keys, device, workers, autocast=False)
    reference = reference_fn(sample, keys, device)
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    diffs = [abs(r["matches"] - reference[(r["path"], r["commitment"])]) for r in rows]
    # Batch composition may change the last bits of a logit, rarely flipping one argmax.
    assert max(diffs) <= 1 and sum(diffs) <= len(diffs) // 10, diffs
    return f"{len(diffs)} (model, key) pairs, {sum(d == 0 for d in diffs)} identical"


def naive_weights(paths: list[Path], keys, device: torch.device) -> dict:
    """Per model: load it, then verify_weights_many (all keys in one batched projection)."""
    out = {}
    for path in paths:
        if path.suffix == ".safetensors":
            sd = safetensors.torch.load_file(path, device=str(device))
        else:
            sd = torch.load(path, weights_only=True, map_location=device)
        for key, verdict in zip(keys, verify_weights_many(sd, keys)):
            out[(str(path), key.commitment())] = verdict.matches
    return out


def time_methods(methods: dict, paths: list[Path], device, args, mb: float) -> list[dict]:
    """Median seconds per method, warm (page cache) and, with --cold, after eviction."""
    results = []
    for cache in ["warm"] + (["cold"] if args.cold else []):
        if cache == "warm":
            read_bound(paths, torch.device("cpu"), args.workers)  # fill the page cache
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeat):  # round-robin, so load from others hits all alike
            for name, fn in methods.items():
                if cache == "cold":
                    evict(paths)
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t)
        for name, runs in times.items():
            seconds = statistics.median(runs)
            results.append({"method": name, "cache": cache, "seconds": seconds, "runs": runs,
                            "models_per_s": len(paths) / seconds, "mb_per_s": mb / seconds})
    return results


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'method':<7} {'cache':<5} {'seconds':>8} {'models/s':>9} {'MB/s':>8} "
          f"{'vs naive':>9} {'vs read':>8}")
    for r in results:
        same = {x["method"]: x for x in results if x["cache"] == r["cache"]}
        print(f"{r['method']:<7} {r['cache']:<5} {r['seconds']:8.2f} {r['models_per_s']:9.2f} "
              f"{r['mb_per_s']:8.1f} {same['naive']['seconds'] / r['seconds']:8.2f}x "
              f"{r['seconds'] / same['read']['seconds']:7.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", type=int, default=None, help="default 1000 on CUDA, 100 on CPU")
    parser.add_argument("--keys", type=int, default=10, help="trigger keys; 0 skips them")
    parser.add_argument("--images", type=int, default=100, help="triggers per key")
    parser.add_argument("--weight-keys", type=int, default=100,
                        help="fingerprint (weight) keys; 0 skips the weight-key scan")
    parser.add_argument("--weight-models", type=int, default=None,
                        help="files in the weight-key scan (default: all)")
    parser.add_argument("--weight-bits", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (median)")
    parser.add_argument("--cold", action="store_true", help="also time after evicting the files")
    parser.add_argument("--dir", default=None,
                        help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    n = args.models or (1000 if device.type == "cuda" else 100)

    folder = Path(tempfile.mkdtemp(prefix="mlguard-bench-scan-", dir=args.dir))
    report = {"device": str(device), "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "models": n, "workers": args.workers}
    try:
        t = time.perf_counter()
        paths = generate(folder, n)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"generated {n} checkpoints, {mb:.0f} MB, in {time.perf_counter() - t:.0f} s")

        if args.keys:
            keys = [mlguard.TriggerKey.generate(num_classes=10, size=args.images,
                                                shape=(3, 32, 32), mean=CIFAR_MEAN,
                                                std=CIFAR_STD, secret=bytes([i + 1]) * 32)
                    for i in range(args.keys)]
            print("trigger keys, scan (fp32) vs naive:",
                  check_agreement(paths, keys, device, args.workers, naive))
            results = time_methods({"read": lambda: read_bound(paths, device, args.workers),
                                    "naive": lambda: naive(paths, keys, device),
                                    "scan": lambda: run_scan(paths, keys, device, args.workers)},
                                   paths, device, args, mb)
            print_table(f"{n} ResNet-18 checkpoints x {args.keys} trigger keys x {args.images} "
                        f"triggers on {device} ({args.workers} reader threads)", results)
            report["trigger"] = {"keys": args.keys, "images_per_key": args.images, "mb": mb,
                                 "results": results}

        if args.weight_keys:
            wpaths = paths[:args.weight_models or n]
            wmb = sum(p.stat().st_size for p in wpaths) / 1e6
            wkeys = [mlguard.WeightKey.generate(bits=args.weight_bits,
                                                targets=("layer3.0.conv1.weight",),
                                                secret=bytes([101 + i % 150, i // 150]) * 16)
                     for i in range(args.weight_keys)]
            print("\nweight keys, scan vs verify_weights_many:",
                  check_agreement(wpaths, wkeys, device, args.workers, naive_weights))
            wresults = time_methods(
                {"read": lambda: read_bound(wpaths, device, args.workers),
                 "naive": lambda: naive_weights(wpaths, wkeys, device),
                 "scan": lambda: run_scan(wpaths, wkeys, device, args.workers)},
                wpaths, device, args, wmb)
            print_table(f"{len(wpaths)} ResNet-18 checkpoints x {args.weight_keys} weight keys "
                        f"({args.weight_bits} bits, layer3.0.conv1.weight) on {device}", wresults)
            report["weight"] = {"keys": args.weight_keys, "bits": args.weight_bits,
                                "models": len(wpaths), "mb": wmb, "results": wresults}
        print("(vs naive: speed-up over the per-model loop; vs read: time / time to merely "
              "read the same files)")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
