"""A scan killed with SIGKILL or stopped with Ctrl-C halfway resumes from its journal and
loses nothing."""

import collections
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from mlguard import TriggerKey, WeightKey
from mlguard.scan import ScanInterrupted, loading, pipeline, scan
from mlguard.schemes import get_scheme

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


# -- Ctrl-C: the files checked before it are kept, the rest resumes (issue 10) --------------


def _weight_corpus(root: Path, count: int) -> tuple[Path, Path]:
    models = root / "wmodels"
    models.mkdir()
    for i in range(count):
        torch.manual_seed(100 + i)
        safetensors.torch.save_file(tiny_cnn().state_dict(), models / f"w{i:02d}.safetensors")
    key = root / "w.key"
    WeightKey.generate(bits=16, targets=("0.weight",), secret=b"\x11" * 32).save(key)
    return models, key


def _counting_weight_check(monkeypatch, interrupt_on_call: int | None = None) -> list[int]:
    """Wraps the weight scheme's read: records each call's batch size, raises
    KeyboardInterrupt on the given call (1-based) as a Ctrl-C during that check would."""
    scheme = get_scheme("weight")
    real = scheme.read_many
    calls: list[int] = []

    def read_many(keys, suspects, options):
        calls.append(len(suspects))
        if len(calls) == interrupt_on_call:
            raise KeyboardInterrupt
        return real(keys, suspects, options)
    monkeypatch.setattr(scheme, "read_many", staticmethod(read_many))
    return calls


def test_interrupted_scan_keeps_every_checked_file_and_resumes_to_the_same_rows(
        tmp_path, monkeypatch):
    models, key = _weight_corpus(tmp_path, 6)
    journal = tmp_path / "scan.db"
    calls = _counting_weight_check(monkeypatch, interrupt_on_call=3)
    # A 1-byte cap: one model at a time, so the weight checker is called once per file.
    with pytest.raises(ScanInterrupted) as e:
        scan(models, key, journal=journal, device="cpu", workers=1, memory_cap=1)
    assert calls == [1, 1, 1]
    assert (e.value.checked, e.value.total) == (2, 6)
    assert str(e.value) == "scan interrupted after 2 of 6 files"
    assert _journal_rows(journal) == 2  # the two files checked before Ctrl-C, one key

    monkeypatch.undo()
    resumed = scan(models, key, journal=journal, device="cpu")
    assert resumed == scan(models, key, device="cpu")
    assert _journal_rows(journal) == 6


def test_a_partial_weight_key_batch_is_journaled_within_seconds(tmp_path, monkeypatch):
    """A batch waiting to fill (64 models per weight-key call) is checked and journaled once
    it has waited COMMIT_INTERVAL, not when the whole scan is read."""
    models, key = _weight_corpus(tmp_path, 8)
    calls = _counting_weight_check(monkeypatch)
    real_read = loading.read_model_file

    def slow_read(path, *args):
        time.sleep(0.2)
        return real_read(path, *args)
    monkeypatch.setattr(loading, "read_model_file", slow_read)
    monkeypatch.setattr(pipeline, "COMMIT_INTERVAL", 0.5)
    rows = scan(models, key, journal=tmp_path / "scan.db", device="cpu", workers=1)
    assert len(rows) == 8 and sum(calls) == 8
    assert len(calls) >= 2 and max(calls) <= 4, calls  # ~0.2 s per file, 0.5 s per batch


def test_ctrl_c_keeps_the_checked_files_prints_one_line_and_exits_130(tmp_path):
    models, keys = _corpus(tmp_path)
    journal = tmp_path / "scan.db"
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, SCAN_TEST_SLEEP="0.3", OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "mlguard", "scan", str(models), "--keys", *map(str, keys),
            "--arch", "scan_helper:slow_tiny_cnn", "--journal", str(journal), "--device", "cpu",
            "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while _journal_rows(journal) < 3 * KEYS:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the scan wrote no rows within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    found = re.fullmatch(r"mlguard scan: interrupted after (\d+) of (\d+) files; "
                         r"rerun with the same --journal to resume", lines[0])
    assert found and int(found.group(2)) == FILES, lines[0]
    checked, kept = int(found.group(1)), _journal_rows(journal) // KEYS
    assert 3 <= checked < FILES and checked <= kept <= checked + 1  # commit, then count

    env["SCAN_TEST_SLEEP"] = "0"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]  # broken.pt cannot be checked
    assert f"{kept} of {FILES} files already done, {FILES - kept} to check" in done.stderr
    assert _journal_rows(journal) == FILES * KEYS
