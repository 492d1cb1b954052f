"""The `mlguard` command exists where the README says (issue 10, "What was seen" 1): `make
build` installs the package editable, with pip's console script in the venv (issue 25), and
`--arch` imports from the current folder as `python -m mlguard` does."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import mlguard
from mlguard import TriggerKey

ROOT = Path(__file__).resolve().parents[2]

NET = """import torch.nn as nn
def net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
"""


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


def test_make_build_installs_mlguard_with_pips_console_script(work):
    """`make build` is an editable pip install: the distribution is recorded (pip show,
    importlib.metadata) and the console script is pip's, from [project.scripts]."""
    try:
        dist = importlib.metadata.distribution("mlguard")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"mlguard is not installed in {sys.prefix}: run `make build` "
                    "(pip install --no-build-isolation -e .)")
    assert dist.version == mlguard.__version__
    scripts = [(ep.name, ep.value) for ep in dist.entry_points if ep.group == "console_scripts"]
    assert scripts == [("mlguard", "mlguard.cli:console_main")]
    script = Path(sysconfig.get_path("scripts")) / "mlguard"
    assert os.access(script, os.X_OK), f"{script} is missing"
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
