"""CIFAR-10 in the protocol: data.name = "cifar10" (the JPEG archive at data.path or
$MLGUARD_CIFAR10), its checks, the shipped GPU config, and a tiny config end to end."""

import os
import tomllib
from pathlib import Path

import pytest

from mlguard.evaluation.config import load_config, parse_config
from mlguard.evaluation import protocol
from mlguard.evaluation.protocol import CIFAR10_ENV, load_task, run_protocol

ROOT = Path(__file__).resolve().parents[2]
# where the Makefile looks for the archive when MLGUARD_CIFAR10 is not set
BESIDE = [ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
          Path("/work/shared/data/cifar10-jpeg.tar.gz")]

TINY = """
attacks = ["prune:0.5"]

[data]
name = "cifar10"
path = "{path}"
train_limit = 600
test_limit = 200

[owner]
arch = "mlguard.evaluation.archs:cifar_cnn"
epochs = 1
embed_epochs = 3
references = 1

[protocol]
alpha = 1e-3

[schemes.uchida]
scheme = "weight"
bits = 32
targets = ["11.weight"]
"""


def archive() -> str:
    for candidate in [os.environ.get(CIFAR10_ENV)] + [str(p) for p in BESIDE]:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(f"the CIFAR-10 (JPEG) archive is absent: set {CIFAR10_ENV} (none of "
                f"{[str(p) for p in BESIDE]} exists)")


def test_the_shipped_config_is_valid_and_unknown_fields_are_rejected():
    config = load_config(ROOT / "configs" / "cifar10.toml")
    assert config.data["name"] == "cifar10" and "path" not in config.data
    raw = {"data": {"name": "cifar10", "pth": "x"}, "owner": {"arch": "m:f"},
           "schemes": {"a": {"scheme": "weight"}}, "attacks": ["prune:0.5"]}
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['pth'\]"):
        parse_config(raw)
    raw["data"] = {"name": "cifar100"}
    with pytest.raises(ValueError, match="data.name must be one of"):
        parse_config(raw)
    raw["data"] = {"name": "fashion-mnist", "path": "/somewhere"}
    with pytest.raises(ValueError, match="remove data.path"):
        parse_config(raw)


def test_a_missing_archive_says_how_to_give_it(tmp_path, monkeypatch):
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    raw = {"data": {"name": "cifar10"}, "owner": {"arch": "m:f"},
           "schemes": {"a": {"scheme": "weight"}}, "attacks": ["prune:0.5"]}
    with pytest.raises(ValueError, match=f"data.path .* or the {CIFAR10_ENV} environment"):
        load_task(parse_config(raw), 0)
    monkeypatch.setenv(CIFAR10_ENV, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(ValueError, match=f"{CIFAR10_ENV} names .*nope.tar.gz.*does not exist"):
        load_task(parse_config(raw), 0)
    raw["data"]["path"] = str(tmp_path / "gone")
    with pytest.raises(ValueError, match="data.path names .*gone.*does not exist"):
        load_task(parse_config(raw), 0)


def test_a_tiny_cifar10_config_runs_end_to_end(tmp_path, monkeypatch):
    config = parse_config(tomllib.loads(TINY.format(path=archive())))
    tasks = []

    def spy(*args):  # the task the protocol loads, looked at without loading it twice
        tasks.append(load_task(*args))
        return tasks[-1]

    monkeypatch.setattr(protocol, "load_task", spy)
    cells = run_protocol(config, tmp_path / "out", progress=lambda _line: None)
    task = tasks[0]
    assert task.shape == (3, 32, 32) and task.owner[0].shape[1:] == (3, 32, 32)
    assert len(task.owner[0]) + len(task.attacker[0]) == 600 and len(task.test[0]) == 200
    assert len(set(task.test[1].tolist())) == 10  # the limit takes every class
    assert len(set(task.owner[1].tolist())) == 10
    assert [c["attack"] for c in cells] == ["none", "prune"]
    assert all("error" not in c for c in cells), cells
    owner = cells[0]
    assert owner["detected"] and not owner["clean_twin"]["detected"]
    assert owner["data"].startswith("cifar10: owner 400, attacker 200")
