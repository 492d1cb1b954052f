"""Peak memory of mlguard.scan against its memory cap, with and without a weight key (issue 10).

Writes N model files (an MLP of about --file-mb MB; half torch.save, half safetensors) into
a temporary folder, then scans them in a fresh process per case, on the CPU:

  trigger   one trigger-set key (one model per check)
  +weight   the same key and one weight key (weight keys are checked many models per call)

and prints the process's peak resident set (VmHWM) above what it held before the scan (after
a warm-up scan of one small file), against the cap. A scan whose memory the cap bounds stays
within cap + one model + a constant. On a version without the memory_cap argument the old
module constant (pipeline.MAX_INFLIGHT_BYTES) is set to the cap instead.

    python benchmarks/bench_scan_memory.py                     # 16 files x 64 MB, cap 256 MB
    python benchmarks/bench_scan_memory.py --files 30 --file-mb 128 --cap-mb 1024
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

MB = 1 << 20
HERE = Path(__file__).resolve().parent
SHAPE = (3, 32, 32)


def mlp(hidden: int = 5000) -> nn.Module:
    """3x32x32 -> `hidden` -> 10: about hidden * 12 kB of float32 weights."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def _hidden_for(megabytes: int) -> int:
    return max(16, megabytes * MB // (4 * (3 * 32 * 32 + 1 + 10)))


def write_files(folder: Path, count: int, megabytes: int) -> None:
    import safetensors.torch
    folder.mkdir()
    hidden = _hidden_for(megabytes)
    for i in range(count):
        torch.manual_seed(i)
        sd = mlp(hidden).state_dict()
        if i % 2:
            torch.save(sd, folder / f"m{i:03d}.pt")
        else:
            safetensors.torch.save_file(sd, folder / f"m{i:03d}.safetensors")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) * 1024


def child(models: str, warmup: str, keys: list[str], cap: int, hidden: int) -> None:
    """Runs in the fresh process: warm-up scan, then the measured one; prints JSON."""
    from mlguard.scan import scan
    kwargs = dict(arch="bench_scan_memory:mlp", arch_kwargs={"hidden": hidden},
                  device="cpu", progress=False)
    scan(warmup, keys, **{**kwargs, "arch_kwargs": {"hidden": 16}})  # a small model
    if "memory_cap" in inspect.signature(scan).parameters:
        kwargs["memory_cap"] = cap
    else:  # before issue 10: the cap was a module constant for files read ahead
        sys.modules["mlguard.scan.pipeline"].MAX_INFLIGHT_BYTES = cap
    base = _hwm()
    start = time.perf_counter()
    rows = scan(models, keys, **kwargs)
    print(json.dumps({"base": base, "peak": _hwm(), "seconds": time.perf_counter() - start,
                      "rows": len(rows), "errors": sum(r["error"] is not None for r in rows)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--file-mb", type=int, default=64)
    ap.add_argument("--cap-mb", type=int, default=256)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        models, warmup, cap, hidden, *keys = args.child
        child(models, warmup, keys, int(cap), int(hidden))
        return

    from mlguard import TriggerKey, WeightKey
    root = Path(tempfile.mkdtemp(prefix="bench_scan_memory_"))
    try:
        hidden = _hidden_for(args.file_mb)
        write_files(root / "models", args.files, args.file_mb)
        (root / "warmup").mkdir()
        torch.save(mlp(16).state_dict(), root / "warmup" / "w.pt")
        trigger, weight = root / "t.key", root / "w.key"
        TriggerKey.generate(num_classes=10, size=32, shape=SHAPE, secret=b"\x01" * 32).save(trigger)
        WeightKey.generate(bits=64, targets=("3.weight",), secret=b"\x02" * 32).save(weight)
        file_mb = max(p.stat().st_size for p in (root / "models").iterdir()) / MB
        total_mb = sum(p.stat().st_size for p in (root / "models").iterdir()) / MB
        print(f"{args.files} files, largest {file_mb:.0f} MB, {total_mb:.0f} MB in all; "
              f"cap {args.cap_mb} MB; bound cap + one model = {args.cap_mb + file_mb:.0f} MB")
        print(f"{'keys':10} {'peak - before':>14} {'peak RSS':>10} {'seconds':>8}")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(HERE), os.environ.get("PYTHONPATH", "")]))
        for name, keys in (("trigger", [trigger]), ("+weight", [trigger, weight])):
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(root / "models"), str(root / "warmup"),
                 str(args.cap_mb * MB), str(hidden), *map(str, keys)],
                env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(done.stderr[-3000:])
            got = json.loads(done.stdout.strip().splitlines()[-1])
            assert got["errors"] == 0 and got["rows"] == args.files * len(keys), got
            print(f"{name:10} {(got['peak'] - got['base']) / MB:11.0f} MB "
                  f"{got['peak'] / MB:7.0f} MB {got['seconds']:8.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
