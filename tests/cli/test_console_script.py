"""The `mlguard` command exists where the README says (issue 10, "What was seen" 1): the
Makefile's setup leaves a console script in the venv, and `--arch` imports from the current
folder as `python -m mlguard` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlguard import TriggerKey

ROOT = Path(__file__).resolve().parents[2]

NET = """import torch.nn as nn
def net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
"""


@pytest.fixture
def venv(tmp_path):
    """A venv folder as `make setup` leaves it (deps installed), with this python."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".deps").touch()  # newer than requirements-dev.txt: nothing to install
    return venv


def _make(venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), f"VENV={venv}", f"PY={sys.executable}",
                           f"{venv}/bin/mlguard"], capture_output=True, text=True, timeout=60)


@pytest.fixture
def work(tmp_path):
    """A user's folder: their own architecture (mynets.py), a key and a suspect model."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "mynets.py").write_text(NET)
    key = TriggerKey.generate(num_classes=10, size=20, shape=(1, 8, 8), secret=b"\x05" * 32)
    key.save(work / "owner.key")
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(),
               work / "suspect.pt")
    return work


SCAN = ["scan", "suspect.pt", "--keys", "owner.key", "--arch", "mynets:net", "--device", "cpu",
        "--no-progress"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "python"))


def test_make_installs_a_working_mlguard_command(venv, work):
    done = _make(venv)
    assert done.returncode == 0, done.stderr
    script = venv / "bin" / "mlguard"
    assert os.access(script, os.X_OK)
    again = _make(venv)  # idempotent: nothing to do the second time
    assert again.returncode == 0 and again.stdout == ""
    done = subprocess.run([str(script), *SCAN], cwd=work, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scan: 1 models x 1 keys, 0 detections, 0 files with errors" in done.stderr


def test_pip_entry_point_imports_arch_from_the_current_folder(work):
    """pyproject's entry point (what `pip install .` makes), where sys.path lacks the cwd."""
    entry = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines()
                 if line.startswith("mlguard = "))
    module, func = entry.split('"')[1].split(":")
    code = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            f"sys.argv = ['mlguard', *{SCAN!r}]; "
            f"import importlib; importlib.import_module({module!r}).{func}()")
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0 files with errors" in done.stderr
