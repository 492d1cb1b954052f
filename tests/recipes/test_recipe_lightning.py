"""docs/recipes/lightning.md: trigger mixing and the weight watermark's loss inside a
LightningModule, retention logged with self.log, Lightning's .ckpt files verified and
scanned (CPU, one process)."""

from __future__ import annotations

import csv
import os

import pytest
import torch

import mlguard
from mlguard import data

pytest.importorskip("lightning")
from _doc_code import run_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="needs Debian's dataset-fashion-mnist")


def test_the_recipe_logs_retention_and_its_checkpoints_verify(tmp_path):
    torch.set_num_threads(1)
    scope = run_recipe("lightning.md", tmp_path)
    trigger_key, weight_key = scope["trigger_key"], scope["weight_key"]
    module, trigger_verdict, weight_verdict = (scope[k] for k in (
        "module", "trigger_verdict", "weight_verdict"))
    # retention was logged once per epoch, with the value mlguard.retention gives
    metrics = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    logged = [float(r["retention"]) for r in metrics if r.get("retention")]
    assert len(logged) == 6
    assert logged[-1] == pytest.approx(mlguard.retention(module.model, trigger_key))
    # a tiny run: well above chance; detection at 1e-6 is not promised at this size
    assert trigger_verdict.p_value < 1e-3, str(trigger_verdict)
    assert trigger_verdict.file_sha256 is not None  # read from the .ckpt file
    assert weight_verdict.detected and weight_verdict.matches == weight_key.bits
    results = scope["results"]
    assert weight_verdict.weights_sha256 == mlguard.verify(module.model, weight_key).weights_sha256
    assert not results.errors and len(results) == 6  # one row per epoch's checkpoint
    last = [r for r in results if r["path"] == str(tmp_path / scope["last"])]
    assert [r["matches"] for r in last] == [trigger_verdict.matches]
    # the limit the page states: a weight key does not find its targets in the .ckpt itself
    with pytest.raises(ValueError, match="similar names: .*model.7.weight"):
        mlguard.verify(tmp_path / scope["last"], weight_key)
