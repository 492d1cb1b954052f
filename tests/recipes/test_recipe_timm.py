"""docs/recipes/timm.md: a tiny timm model from its config, watermarked while training, its
checkpoints (torch.save dicts and safetensors) verified and scanned."""

from __future__ import annotations

import os

import pytest
import torch

import mlguard
from mlguard import data

pytest.importorskip("timm")
from _doc_code import run_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="needs Debian's dataset-fashion-mnist")


def test_the_recipe_watermarks_verifies_and_scans_checkpoints(tmp_path):
    torch.set_num_threads(1)
    scope = run_recipe("timm.md", tmp_path)
    key, model, verdict, results = (scope[k] for k in ("key", "model", "verdict", "results"))
    # a tiny run: well above chance (1/10); detection at 1e-6 is not promised at this size
    assert verdict.p_value < 1e-3, str(verdict)
    assert verdict.matches == mlguard.verify(model, key).matches
    assert len(results) == 6 and not results.errors
    by_name = {os.path.basename(r["path"]): r for r in results}
    # the dict checkpoint and the safetensors file of an epoch hold the same weights
    for epoch in (2, 4, 6):
        a, b = by_name[f"epoch-{epoch}.pth"], by_name[f"epoch-{epoch}.safetensors"]
        assert a["matches"] == b["matches"] and a["weights_sha256"] == b["weights_sha256"]
    assert by_name["epoch-6.safetensors"]["matches"] == verdict.matches


def test_a_checkpoint_with_pickled_objects_is_refused_not_unpickled(tmp_path):
    import argparse
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)},
               tmp_path / "timm-train.pth")
    with pytest.raises(ValueError, match="timm-train.pth"):
        mlguard.files.checkpoint.load_state_dict(tmp_path / "timm-train.pth")
