"""examples/imagenet.py runs end to end on a tiny ImageFolder made of CIFAR-10 images."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torchvision

import mlguard

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "imagenet.py"
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR = ARCHIVE if ARCHIVE.exists() else Path(os.environ.get("MLGUARD_CIFAR10", ARCHIVE))
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = ("airplane", "cat", "ship"), 6, 2

needs_cifar = pytest.mark.skipif(
    not CIFAR.is_file(), reason=f"the CIFAR-10 JPEG archive is not at {ARCHIVE} and "
    "MLGUARD_CIFAR10 does not name it")


@pytest.fixture(scope="module")
def tiny_image_folder(tmp_path_factory):
    """train/<class>/ and val/<class>/ with a few CIFAR-10 images of three classes."""
    root = tmp_path_factory.mktemp("tiny-imagenet")
    wanted = {(split, c): n for c in CLASSES
              for split, n in (("train", TRAIN_PER_CLASS), ("test", VAL_PER_CLASS))}
    with tarfile.open(CIFAR) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3:
                continue
            split, c = parts[-3], parts[-2]
            if wanted.get((split, c), 0) > 0:
                wanted[(split, c)] -= 1
                dest = root / ("val" if split == "test" else "train") / c / parts[-1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
            if not any(wanted.values()):
                break
    assert not any(wanted.values()), f"the archive lacks images: {wanted}"
    return root


def run(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")])), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@needs_cifar
def test_adi_recipe_on_a_tiny_image_folder(tiny_image_folder, tmp_path):
    out = tmp_path / "out"
    result = run("--data", str(tiny_image_folder), "--epochs", "2", "--device", "cpu",
                 "--image-size", "32", "--batch-size", "6", "--workers", "0",
                 "--triggers", "10", "--per-batch", "2", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    key = mlguard.load_key(out / "owner.key")
    assert key.shape == (3, 32, 32) and key.num_classes == 3 and key.size == 10
    assert f"commitment {key.commitment()}" in result.stdout
    assert "epoch 2/2: loss" in result.stdout and "trigger set" in result.stdout
    verdict = mlguard.Verdict.from_dict(json.loads((out / "verdict.json").read_text()))
    assert verdict.total == 10 and verdict.commitment == key.commitment()
    assert ("DETECTED" if verdict.detected else "NOT DETECTED") in result.stdout
    model = torchvision.models.resnet50(weights=None, num_classes=3)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert mlguard.verify(model, key).matches == verdict.matches  # the verdict is the model's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == 3 and summary["train_images"] == 3 * TRAIN_PER_CLASS


def test_missing_split_is_a_clear_error(tmp_path):
    (tmp_path / "data" / "val" / "cat").mkdir(parents=True)
    result = run("--data", str(tmp_path / "data"), "--device", "cpu", "--out", str(tmp_path / "o"))
    assert result.returncode != 0
    assert "no train/ folder" in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()
