"""The documented command-line path on the demo's own models (issue 10, "Done when"): the
demo as `make demo` runs it, then every line of "From the command line: key to signed
evidence" (docs/guides/cli-walkthrough.md) exactly as written, through the `mlguard` command, in a fresh folder.

Slow: the demo trains two Fashion-MNIST CNNs on all 60,000 images (2 epochs each; under 3
minutes on 2 idle cores). test_readme_cli_path.py runs the same lines on small stand-ins in seconds."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from test_readme_cli_path import EXPECTED, readme_lines  # noqa: E402


def _mlguard() -> list[str]:
    """The console script `make` leaves beside this python, else `python -m mlguard`."""
    script = Path(sys.executable).parent / "mlguard"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlguard"]


def test_readme_cli_path_on_the_demos_models(tmp_path):
    env = {**os.environ, "MLGUARD_PASSPHRASE": "correct horse battery staple"}
    demo = subprocess.run(_mlguard() + ["demo", "--device", "cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    for line in readme_lines():
        argv = shlex.split(line)
        assert argv[0] == "mlguard", line
        done = subprocess.run(_mlguard() + argv[1:], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == EXPECTED.get(argv[1], 0), \
            f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "OK: runs/demo/evidence.json verifies" in done.stdout + done.stderr
    assert (tmp_path / "runs" / "demo" / "evidence.html").is_file()
    assert (tmp_path / "my.key").is_file()
