"""The scan CLI under torchrun: 2 CPU processes (gloo), files sharded, rank 0 writes."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

from mlguard import TriggerKey
from mlguard.scan import scan

from scan_helper import MEAN, SHAPE, STD, tiny_cnn

TESTS = Path(__file__).resolve().parent


def test_torchrun_two_ranks_match_a_single_process_scan(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for i in range(6):
        torch.manual_seed(100 + i)
        path = models / (f"m{i}.safetensors" if i % 2 else f"m{i}.pt")
        sd = tiny_cnn().state_dict()
        safetensors.torch.save_file(sd, path) if i % 2 else torch.save(sd, path)
    (models / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{trunc")
    keys = []
    for i in range(2):
        keys.append(tmp_path / f"k{i}.key")
        TriggerKey.generate(num_classes=10, size=40, shape=SHAPE, mean=MEAN, std=STD,
                            secret=bytes([60 + i]) * 32).save(keys[-1])
    journal, out = tmp_path / "scan.db", tmp_path / "rows.json"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "mlguard.cli.scan", str(models), "--keys", *map(str, keys),
         "--arch", "scan_helper:tiny_cnn", "--device", "cpu", "--journal", str(journal),
         "--out", str(out), "--no-progress", "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=180)
    # broken.safetensors was not checked: rank 0 exits 3, which torchrun reports as a failure
    # (torchrun itself exits 1 for any failed rank, and names the rank's code).
    assert done.returncode != 0 and "(exitcode: 3)" in done.stderr, done.stderr[-3000:]
    assert "scan: 7 models x 2 keys, 0 detections, 1 file with errors" in done.stderr

    expected = scan(models, keys, arch="scan_helper:tiny_cnn", device="cpu")
    assert json.loads(out.read_text())["rows"] == expected

    files = sorted({r["path"] for r in expected})
    assert not journal.exists()
    for rank in (0, 1):
        with sqlite3.connect(f"{journal}.rank{rank}") as db:
            paths = {p for (p,) in db.execute("SELECT path FROM rows")}
            assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 2 * len(paths)
        assert sorted(paths) == files[rank::2]
