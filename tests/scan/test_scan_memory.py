"""The scan's memory cap bounds everything it holds, weight-key batches included (issue 10).

Weight keys are checked many models per call; the scan used to gather 64 decoded models
whatever their size (16.8 GB peak for 30 files of 268 MB). Here files totalling several
times the cap are scanned in a fresh process, whose peak RSS (VmHWM) must stay within the
cap + one model + a constant above what it held before the scan.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import safetensors.torch
import torch

from mlguard import WeightKey

MB = 1 << 20
FILES, FILE_MB, CAP_MB = 12, 24, 64  # 288 MB of models, 4.5 times the cap
SLACK_MB = 40  # interpreter, allocator and checker working memory, not per model

CHILD = textwrap.dedent("""
    import json, sys
    import mlguard
    from mlguard.scan import scan

    def hwm_bytes():  # the process's peak resident set so far
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    models, warmup, key, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    scan(warmup, key, device="cpu", workers=2, progress=False)  # lazy imports, threads
    base = hwm_bytes()
    rows = scan(models, key, device="cpu", workers=2, progress=False, memory_cap=cap)
    print(json.dumps({"base": base, "peak": hwm_bytes(), "rows": len(rows),
                      "errors": [r["error"] for r in rows if r["error"]]}))
""")


def write_models(folder: Path, count: int, megabytes: int) -> None:
    """`count` files of about `megabytes` MB, alternating torch.save and safetensors."""
    folder.mkdir()
    for i in range(count):
        sd = {"body": torch.full((megabytes * MB // 4,), float(i)),
              "head.weight": torch.randn(32, 64, generator=torch.Generator().manual_seed(i))}
        if i % 2:
            torch.save(sd, folder / f"m{i:02d}.pt")
        else:
            safetensors.torch.save_file(sd, folder / f"m{i:02d}.safetensors")


def peak_above_baseline(tmp_path: Path, cap: int) -> dict:
    models, warmup = tmp_path / "models", tmp_path / "warmup"
    write_models(models, FILES, FILE_MB)
    write_models(warmup, 1, 1)
    key = tmp_path / "w.key"
    WeightKey.generate(bits=32, targets=("head.weight",), secret=bytes([9]) * 32).save(key)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, str(models), str(warmup), str(key),
                           str(cap)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_weight_key_scan_stays_within_the_memory_cap(tmp_path):
    cap = CAP_MB * MB
    got = peak_above_baseline(tmp_path, cap)
    assert got["rows"] == FILES and got["errors"] == []
    grew = got["peak"] - got["base"]
    bound = cap + FILE_MB * MB + SLACK_MB * MB
    assert grew <= bound, (f"peak RSS grew by {grew / MB:.0f} MB scanning {FILES} files of "
                           f"{FILE_MB} MB with a {CAP_MB} MB cap; bound {bound / MB:.0f} MB")
