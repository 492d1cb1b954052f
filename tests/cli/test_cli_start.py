"""`mlguard --help` and every verb's `--help` start fast (issue 24): they import no torch,
nor the other heavy libraries, because the parsers are built from torch-free modules and
each verb imports what it runs. Held by counting imports, not by timing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "scipy", "matplotlib", "safetensors", "cryptography", "tqdm",
         "PIL", "torchvision")

# Every command path of the parser, each asked for --help in one fresh interpreter; prints
# the paths and the heavy top-level modules it found imported.
PROBE = """
import argparse, contextlib, io, json, sys
from mlguard.cli.main import build_parser

def paths(parser, prefix=()):
    yield prefix
    if prefix[:2] == ("key", "new"):
        return  # a scheme's own options are parsed when it runs (test below)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from paths(sub, prefix + (name,))

helps = {}
for path in paths(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            build_parser().parse_args([*path, "--help"])
        except SystemExit as e:
            assert e.code == 0, path
    helps[" ".join(path)] = out.getvalue()
print(json.dumps({"helps": helps, "imported": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))


def _heavy(imported) -> list[str]:
    return sorted(set(imported) & set(HEAVY))


def test_every_verbs_help_imports_no_torch():
    done = subprocess.run([sys.executable, "-c", PROBE], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    helps = found["helps"]
    # the walk reached the verbs and their sub-verbs, and each printed its usage
    for path in ("", "scan", "verify", "demo", "evaluate", "key new",
                 "fingerprint identify", "evidence build", "stamp"):
        assert path in helps and helps[path].startswith(f"usage: mlguard {path}".rstrip()), path
    assert _heavy(found["imported"]) == [], found["imported"]


def test_python_m_mlguard_help_imports_no_torch():
    """The real entry point, as a user runs it: `python -X importtime -m mlguard --help`."""
    for argv in (["--help"], ["scan", "--help"], ["key", "new", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlguard", *argv],
                              env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("usage: mlguard"), done.stdout
        imported = {line.split("|")[-1].strip().split(".")[0]
                    for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert "mlguard" in imported  # the probe saw the imports at all
        assert _heavy(imported) == [], argv


def test_a_schemes_options_are_still_checked_when_it_runs(capsys, tmp_path):
    """A scheme's options are parsed when `key new` runs (not when --help is built): a bad
    value is still refused with exit 2, naming it."""
    from mlguard.cli.main import main

    out = tmp_path / "k.key"
    try:
        main(["key", "new", "trigger", "--num-classes", "10", "--out", str(out),
              "--kind", "speckles"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown --kind was accepted")
    err = capsys.readouterr().err
    assert "speckles" in err and "abstract" in err, err
    assert not out.exists()


def test_a_schemes_own_help_is_printed_when_it_runs():
    """`mlguard key new SCHEME --help`: the scheme's options (it imports the scheme)."""
    done = subprocess.run([sys.executable, "-m", "mlguard", "key", "new", "trigger", "--help"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: mlguard key new trigger") and "--num-classes" in \
        done.stdout
    listed = subprocess.run([sys.executable, "-m", "mlguard", "key", "new", "--help"],
                            env=_env(), capture_output=True, text=True, timeout=60)
    assert "frontier-stitching" in listed.stdout and "trigger-set | trigger" in listed.stdout
