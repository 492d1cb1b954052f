"""docs/recipes/transformers.md: a tiny ViT built from its config, watermarked while
training, saved with save_pretrained, verified and scanned from its folders."""

from __future__ import annotations

import json
import os

import pytest
import torch

import mlguard
from mlguard import data
from mlguard.files.checkpoint import CheckpointError

transformers = pytest.importorskip("transformers")
from _doc_code import run_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="needs Debian's dataset-fashion-mnist")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("hf")
    return folder, run_recipe("transformers.md", folder)


def test_the_recipe_watermarks_and_reads_save_pretrained_folders(recipe):
    folder, scope = recipe
    key, model, verdict, results = (scope[k] for k in ("key", "model", "verdict", "results"))
    # a tiny run (512 images, 12 epochs): well above chance (1/10), detection at 1e-6 not
    # guaranteed for every fresh key; the full-data runs are in benchmarks/RESULTS.md
    assert verdict.p_value < 1e-3, str(verdict)
    # the folder's verdict is the in-memory model's, and records the file it read
    assert verdict.matches == mlguard.verify(model, key).matches
    file = folder / "checkpoints" / "epoch-12" / "model.safetensors"
    assert verdict.file_sha256 == mlguard.files.io.file_sha256(file)
    assert len(results) == 4 and not results.errors
    last = next(r for r in results if r["path"].endswith("epoch-12/model.safetensors"))
    assert last["matches"] == verdict.matches


def test_transformers_saves_other_names_and_the_wrapper_maps_them(recipe):
    folder, scope = recipe
    from safetensors.torch import load_file
    saved = set(load_file(folder / "checkpoints" / "epoch-3" / "model.safetensors"))
    own = set(scope["model"].state_dict())
    assert saved != own  # transformers 5 reverts ViT's renamed weights when saving
    assert set(scope["build"]().state_dict()) == saved
    with pytest.raises(ValueError, match="wrong architecture"):
        mlguard.verify(folder / "checkpoints" / "epoch-3", scope["key"],
                       arch=lambda: transformers.ViTForImageClassification(scope["config"]))


def test_cli_verify_reads_a_save_pretrained_folder(recipe, tmp_path, monkeypatch):
    folder, scope = recipe
    (tmp_path / "mymodels.py").write_text(
        "from transformers import ViTConfig, ViTForImageClassification\n"
        "from mlguard.integrations.huggingface import PretrainedClassifier\n"
        f"config = ViTConfig.from_dict({scope['config'].to_dict()!r})\n"
        "def build():\n    return PretrainedClassifier(ViTForImageClassification(config))\n")
    scope["key"].save(tmp_path / "owner.key")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from mlguard import cli
    code = cli.main(["verify", str(folder / "checkpoints" / "epoch-12"), "--key",
                             "owner.key", "--arch", "mymodels:build", "--out", "v.json"])
    assert code == (1 if scope["verdict"].detected else 0)
    assert json.loads((tmp_path / "v.json").read_text())["matches"] == scope["verdict"].matches


def test_sharded_and_empty_folders_are_refused_by_name(tmp_path):
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded save_pretrained folder.*max_shard_size"):
        mlguard.files.checkpoint.load_state_dict(tmp_path / "sharded")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds neither model.safetensors nor "
                                              "pytorch_model.bin"):
        mlguard.files.checkpoint.load_state_dict(tmp_path / "empty")


def test_a_model_output_with_logits_is_read_like_a_tensor():
    from types import SimpleNamespace
    from mlguard.verification.verify import logits_of
    t = torch.zeros(2, 10)
    assert logits_of(t) is t and logits_of(SimpleNamespace(logits=t)) is t
    assert logits_of((t,)) == (t,)  # anything else is left for the shape check to refuse
