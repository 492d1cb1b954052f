"""The documented command-line path (docs/guides/cli-walkthrough.md, "From the command line:
key to signed evidence", once in the README) runs line by line through the `mlguard` command
(issue 10, "Done when").

The demo's Fashion-MNIST models take minutes to train, so the lines run on small stand-ins
written where the demo writes its models (runs/demo/owner.key, watermarked.pt, clean.pt):
tiny CNNs for 1x12x12 inputs, with `mlguard.cli.demo:small_cnn` read as
`scan_helper:tiny_cnn` and the key line's shape as the stand-ins'. Everything else runs as
written."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import torch

from mlguard import TriggerKey, TriggerMixer
from mlguard.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scan"))
from scan_helper import MEAN, SHAPE, STD, tiny_cnn, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = ROOT / "docs" / "guides" / "cli-walkthrough.md"
EXPECTED = {"scan": 1, "verify": 1}  # the page says so: a detection; 0 for the rest


def readme_lines() -> list[str]:
    """The command lines of the walkthrough's first `sh` block."""
    page = WALKTHROUGH.read_text()
    assert page.startswith("# From the command line: key to signed evidence\n")
    block = re.search(r"```sh\n(.*?)```", page, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_cli_path_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLGUARD_PASSPHRASE", "correct horse battery staple")
    demo = tmp_path / "runs" / "demo"
    demo.mkdir(parents=True)
    key = TriggerKey.generate(num_classes=10, size=50, shape=SHAPE, mean=MEAN, std=STD)
    key.save(demo / "owner.key")
    torch.manual_seed(0)
    torch.save(train(tiny_cnn(), 150, seed=0, mixer=TriggerMixer(key, per_batch=16,
                                                                 augment=False)).state_dict(),
               demo / "watermarked.pt")
    torch.save(train(tiny_cnn(), 60, seed=1).state_dict(), demo / "clean.pt")

    lines = readme_lines()
    assert [line.split()[1] for line in lines] == ["key", "scan", "verify", "identity",
                                                   "evidence", "evidence"]
    for line in lines:
        line = line.replace("mlguard.cli.demo:small_cnn", "scan_helper:tiny_cnn") \
                   .replace("--shape 1,28,28", "--shape 1,12,12")
        argv = shlex.split(line)
        assert argv[0] == "mlguard"
        assert main(argv[1:]) == EXPECTED.get(argv[1], 0), line
    assert (demo / "evidence.html").is_file() and (tmp_path / "my.key").is_file()
