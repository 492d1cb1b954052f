"""The README's Quick start runs as written (CPU or GPU) on CIFAR-10 (JPEG) and detects its
own watermark."""

import fnmatch
import os
import re
import tarfile
from pathlib import Path

import pytest
import torch

import mlguard

ROOT = Path(__file__).resolve().parents[1]
SUBSET = "cifar10/train/*/0[0-4]??.jpg"  # the README's tar command: 500 images per class
# The archive the docs tell users to name with MLGUARD_CIFAR10 (the Makefile sets it in CI,
# where the archive is beside the clone); those places too, for pytest run by hand.
ARCHIVES = [*([Path(os.environ["MLGUARD_CIFAR10"])] if os.environ.get("MLGUARD_CIFAR10") else []),
            ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
            Path("/work/shared/data/cifar10-jpeg.tar.gz")]


def quick_start() -> tuple[str, str]:
    """(the Quick start section's text, its python code block)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md's Quick start has no python code block"
    return section, blocks[0]


def test_quick_start_runs_and_detects_its_watermark(tmp_path, monkeypatch, capsys):
    archive = next((a for a in ARCHIVES if a.is_file()), None)
    if archive is None:
        pytest.skip(f"CIFAR-10 (JPEG) archive not found at {' or '.join(map(str, ARCHIVES))}")
    section, code = quick_start()
    assert f"--wildcards '{SUBSET}'" in section  # the data the README says it runs on
    with tarfile.open(archive) as tar:  # into a fresh folder: key.save() must not overwrite
        members = [m for m in tar if m.isfile() and fnmatch.fnmatchcase(m.name, SUBSET)]
        assert len(members) == 5000
        tar.extractall(tmp_path, members=members, filter="data")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_quick_start"}
    exec(compile(code, "README.md#quick-start", "exec"), namespace)
    printed = capsys.readouterr().out
    verdict = mlguard.verify(namespace["model"], mlguard.load_key(tmp_path / "owner.key"))
    print(printed, verdict, sep="\n")
    assert verdict.detected, f"{verdict}\n{printed}"
    assert re.search(r"^DETECTED ", printed, flags=re.M), printed  # what the README prints
