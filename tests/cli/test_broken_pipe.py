"""`mlguard ... | head`: when the reader of stdout leaves, the command ends quietly (exit
141, as a shell tool killed by SIGPIPE) instead of printing a traceback."""

import os
import subprocess
import sys
from pathlib import Path

PYTHON = Path(__file__).resolve().parents[2] / "python"


def test_a_closed_stdout_ends_the_command_without_a_traceback():
    env = {**os.environ, "PYTHONPATH": f"{PYTHON}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints anything
    run = subprocess.run([sys.executable, "-m", "mlguard", "info"], stdout=write,
                         stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    os.close(write)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr
