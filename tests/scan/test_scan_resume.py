"""A scan killed with SIGKILL halfway resumes from its journal and loses nothing."""

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

from mlguard import TriggerKey
from mlguard.scan import loading, scan

from scan_helper import MEAN, SHAPE, STD, tiny_cnn

TESTS = Path(__file__).resolve().parent
FILES, KEYS = 16, 2


def _corpus(root: Path) -> tuple[Path, list[Path]]:
    models = root / "models"
    models.mkdir()
    for i in range(FILES - 1):
        torch.manual_seed(i)
        sd = tiny_cnn().state_dict()
        if i % 2:
            torch.save(sd, models / f"m{i:02d}.pt")
        else:
            safetensors.torch.save_file(sd, models / f"m{i:02d}.safetensors")
    (models / "broken.pt").write_text("not a model\n")
    keys = []
    for i in range(KEYS):
        path = root / f"k{i}.key"
        TriggerKey.generate(num_classes=10, size=40, shape=SHAPE, mean=MEAN, std=STD,
                            secret=bytes([40 + i]) * 32).save(path)
        keys.append(path)
    return models, keys


def _journal_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or busy
        return 0


def test_killed_scan_resumes_without_loss_or_duplicates(tmp_path, monkeypatch):
    models, keys = _corpus(tmp_path)
    journal = tmp_path / "scan.db"
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, SCAN_TEST_SLEEP="0.3", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlguard.cli.scan", str(models), "--keys", *map(str, keys),
         "--arch", "scan_helper:slow_tiny_cnn", "--journal", str(journal), "--device", "cpu",
         "--workers", "2", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _journal_rows(journal) < 3 * KEYS:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the scan wrote no rows within 60 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-scan: no cleanup, no final commit
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    partial = _journal_rows(journal)
    assert 3 * KEYS <= partial < FILES * KEYS and partial % KEYS == 0  # whole files only

    reads = []
    real_read = loading.read_model_file
    monkeypatch.setattr(loading, "read_model_file",
                        lambda p, *a: reads.append(p) or real_read(p, *a))
    monkeypatch.setenv("SCAN_TEST_SLEEP", "0")
    resumed = scan(models, keys, arch="scan_helper:slow_tiny_cnn", journal=journal, device="cpu")
    assert len(reads) == FILES - partial // KEYS  # only what the killed run had not finished

    pairs = collections.Counter((r["path"], r["commitment"]) for r in resumed)
    assert len(pairs) == FILES * KEYS and set(pairs.values()) == {1}
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counts = db.execute("SELECT COUNT(*) FROM rows GROUP BY path, commitment").fetchall()
    assert len(counts) == FILES * KEYS and set(counts) == {(1,)}

    uninterrupted = scan(models, keys, arch="scan_helper:tiny_cnn", device="cpu")
    assert resumed == uninterrupted
    assert sum(r["error"] is not None for r in resumed) == KEYS  # broken.pt, once per key

    reads.clear()
    assert scan(models, keys, arch="scan_helper:slow_tiny_cnn", journal=journal,
                device="cpu") == uninterrupted
    assert reads == []  # a finished scan does no work
