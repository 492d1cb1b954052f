"""The scan journal never reports rows for bytes other than those on disk (issue 18, item 1).

Every fp16 file of one architecture has the same size, and `cp -p`, `tar`, `unzip`,
`rsync -t` and `touch -d` restore an old mtime: size and mtime cannot tell a swapped file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3

import safetensors.torch
import torch

from mlguard import WeightKey, embed_weights
from mlguard.scan import loading, scan

from scan_helper import tiny_cnn


def _pair(root):
    """A watermarked model file and a clean twin of exactly the same size, and the key."""
    key = WeightKey.generate(bits=64, targets=("3.weight",), secret=b"\x18" * 32)
    torch.manual_seed(0)
    marked = tiny_cnn()
    embed_weights(marked, key)
    torch.manual_seed(1)
    clean = tiny_cnn()
    safetensors.torch.save_file(marked.state_dict(), root / "marked.safetensors")
    safetensors.torch.save_file(clean.state_dict(), root / "clean.safetensors")
    assert os.path.getsize(root / "marked.safetensors") == \
        os.path.getsize(root / "clean.safetensors")
    return key


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _swap(source, target, how: str) -> None:
    """Puts source's bytes at target, then gives target back its old mtime."""
    before = os.stat(target)
    if how == "copy":  # cp: the same inode, rewritten
        shutil.copyfile(source, target)
    else:  # tar, unzip, rsync: a new file renamed over the old one
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _scan_counting_reads(folder, key, journal, monkeypatch):
    reads = []
    real_read = loading.read_model_file
    monkeypatch.setattr(loading, "read_model_file",
                        lambda p, *a: reads.append(p) or real_read(p, *a))
    rows = scan(folder, key, device="cpu", journal=journal)
    monkeypatch.undo()
    return rows, reads


def _journaled_suspect(tmp_path):
    """A folder holding one watermarked model, scanned once into a journal: (key, folder,
    model path, journal path)."""
    key = _pair(tmp_path)
    folder = tmp_path / "suspects"
    folder.mkdir()
    model = folder / "model.safetensors"
    journal = tmp_path / "j.db"
    shutil.copyfile(tmp_path / "marked.safetensors", model)
    (first,) = scan(folder, key, device="cpu", journal=journal)
    assert first["detected"]
    return key, folder, model, journal


def test_a_same_size_file_with_its_old_mtime_is_checked_again(tmp_path, monkeypatch):
    key, folder, model, journal = _journaled_suspect(tmp_path)

    for source, detected, how in [("clean", False, "copy"), ("marked", True, "copy"),
                                  ("clean", False, "rename"), ("marked", True, "rename")]:
        _swap(tmp_path / f"{source}.safetensors", model, how)
        (row,), reads = _scan_counting_reads(folder, key, journal, monkeypatch)
        assert reads == [str(model)], (source, how)  # redone, not taken from the journal
        assert row["detected"] is detected, (source, how)
        assert row["file_sha256"] == _sha256(model)
        (again,), reads = _scan_counting_reads(folder, key, journal, monkeypatch)
        assert reads == [] and again == row  # unchanged since: the journal's row is used


def test_a_journal_from_before_the_stamp_columns_opens_and_its_rows_are_redone(
        tmp_path, monkeypatch):
    key, folder, model, journal = _journaled_suspect(tmp_path)
    with sqlite3.connect(journal) as db:  # the journal as mlguard 0.3 wrote it
        for column in ("ctime_ns", "inode", "device"):
            db.execute(f"ALTER TABLE rows DROP COLUMN {column}")
    _swap(tmp_path / "clean.safetensors", model, "copy")

    (row,), reads = _scan_counting_reads(folder, key, journal, monkeypatch)
    assert reads == [str(model)] and not row["detected"]
    assert row["file_sha256"] == _sha256(model)
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT COUNT(*) FROM rows WHERE inode IS NULL").fetchone() == (0,)
    (again,), reads = _scan_counting_reads(folder, key, journal, monkeypatch)
    assert reads == [] and again == row
