"""Model files as users really save them get one clear answer everywhere (issue 18, "Also
found"): the same wording for a file that is not a model in the scan and in every other
loader, a hint for a whole pickled module, and Lightning's "model." prefix removed."""

from __future__ import annotations

import json
import os
import sys

import pytest
import safetensors.torch
import torch
from torch import nn

import mlguard
from mlguard import WeightKey
from mlguard.cli import main
from mlguard.files.state_dict import NOT_A_MODEL_FILE
from mlguard.scan import scan

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scan"))
from scan_helper import tiny_cnn  # noqa: E402


def _scan_error(path) -> str:
    key = WeightKey.generate(bits=16, targets=("3.weight",), secret=b"\x07" * 32)
    (row,) = scan([path], key, device="cpu")
    return row["error"]


def test_a_text_file_named_pt_is_not_a_model_file_in_scan_and_in_fingerprint_identify(
        tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    assert _scan_error(text) == NOT_A_MODEL_FILE
    with pytest.raises(ValueError) as e:
        mlguard.load_state_dict(text)
    assert str(e.value) == f"model file {str(text)!r}: {NOT_A_MODEL_FILE}"
    with pytest.raises(ValueError, match=NOT_A_MODEL_FILE.replace("(", r"\(").replace(")", r"\)")):
        mlguard.load_model(text, tiny_cnn)

    master = tmp_path / "master.json"
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "16", "--targets",
                 "3.weight"]) == 0
    assert main(["fingerprint", "key", str(master), "--customer", "acme", "--out",
                 str(tmp_path / "acme.key")]) == 0
    capsys.readouterr()
    assert main(["fingerprint", "identify", str(master), str(text)]) == 2
    err = capsys.readouterr().err
    assert NOT_A_MODEL_FILE in err and "IndexError" not in err and "truncated" not in err


def test_a_whole_pickled_model_is_refused_with_the_state_dict_hint(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(tiny_cnn(), path)  # the module object, not its state_dict
    hint = "torch.save(model)? Save model.state_dict() instead"
    assert "unsafe pickle refused" in _scan_error(path) and hint in _scan_error(path)
    with pytest.raises(ValueError, match=r"Sequential \(a whole model saved with "):
        mlguard.load_state_dict(path)


def test_a_lightning_model_prefix_is_removed_when_it_makes_every_name_match(tmp_path):
    torch.manual_seed(0)
    trained = tiny_cnn()
    sd = trained.state_dict()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    loaded = mlguard.load_model(path, tiny_cnn)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    safetensors.torch.save_file({f"model.{k}": v for k, v in sd.items()},
                                tmp_path / "l.safetensors")
    mlguard.load_model(tmp_path / "l.safetensors", tiny_cnn)

    # Removed only when every name then matches: one stray name and nothing is renamed.
    torch.save({**{f"model.{k}": v for k, v in sd.items()}, "model.extra": torch.ones(1)},
               path)
    with pytest.raises(ValueError, match=r"wrong architecture: .* 8 missing .* 9 unexpected"):
        mlguard.load_model(path, tiny_cnn)

    class Holder(nn.Module):  # a network whose real submodule is named "model"
        def __init__(self):
            super().__init__()
            self.model = tiny_cnn()
    torch.save(Holder().state_dict(), path)
    assert set(mlguard.load_model(path, Holder).state_dict()) == \
        {f"model.{k}" for k in sd}


def test_printing_an_identification_is_readable(tmp_path, capsys):
    shop = mlguard.Fingerprints(bytes(32), bits=16, targets=("3.weight",), issued=["a", "b"])
    found = shop.identify(tiny_cnn())
    text = str(found)
    assert text.startswith("no customer identified among 2 (Bonferroni-adjusted p = ")
    assert len(text.splitlines()[0]) < 100 and "Identification(" not in text
    assert json.dumps(found.tried) == "2"
