"""Models as they leak: half precision, DDP / torch.compile names, checkpoint dicts.

For each way a watermarked model reaches a file, scan detects it, and an evidence report
built from scan's row, from verify on load_model(file), from verify(file) or from verify on
the model the file was saved from, is accepted and checks: all of them cite the same weights
hash as the report's record of the file.
"""

import copy
import hashlib
import json
import warnings

import pytest
import safetensors.torch
import torch

import mlguard
from mlguard.ownership import (check_evidence, check_registration, evidence, evidence_html,
                               reveal)
from mlguard.ownership.documents import file_facts
from mlguard.ownership.identity import Identity, sign_document
from mlguard.scan import rows as scan_rows
from mlguard.verification import state_dict_sha256
from memorizer import Memorizer

ALPHA = 1e-6


def _key():
    return mlguard.TriggerKey.generate(num_classes=10, size=50, shape=(1, 12, 12),
                                       mean=(0.5,), std=(0.25,))


def _quiet(wrapper, module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataParallel warns that there is no GPU
        return wrapper(module)


# name -> (file name, what the file holds given the watermarked model, the model in memory
# the file was saved from)
FORMS = {
    "fp16": ("leak.pt", lambda m: m.half().state_dict(), lambda m: m.half()),
    "bf16": ("leak.safetensors", lambda m: m.bfloat16().state_dict(), lambda m: m.bfloat16()),
    "ddp": ("leak.pt", lambda m: _quiet(torch.nn.DataParallel, m).state_dict(),
            lambda m: _quiet(torch.nn.DataParallel, m)),
    "compiled": ("leak.safetensors", lambda m: torch.compile(m).state_dict(), lambda m: m),
    "state_dict": ("leak.pth", lambda m: {"state_dict": m.state_dict(), "epoch": 3}, lambda m: m),
    "training_checkpoint": ("leak.ckpt", lambda m: {
        "model_state_dict": m.state_dict(), "epoch": 12, "loss": 0.25,
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
        lambda m: m),
    "module_ddp_fp16": ("leak.bin", lambda m: {"module": _quiet(torch.nn.DataParallel,
                                                                m.half()).state_dict()},
                        lambda m: m.half()),
}


@pytest.fixture(scope="module")
def owner():
    key, stranger = _key(), _key()
    return {"key": key, "identity": Identity.generate(), "stranger": stranger,
            # the architecture: a Memorizer of another key, so only the file's weights detect
            "arch": lambda: Memorizer(stranger, 50)}


def _leak(form: str, tmp_path, owner):
    name, content, in_memory = FORMS[form]
    path = tmp_path / name
    data = content(Memorizer(owner["key"], 50))
    if name.endswith(".safetensors"):
        safetensors.torch.save_file(data, path)
    else:
        torch.save(data, path)
    return path, in_memory(Memorizer(owner["key"], 50))


def _evidence_checks(verdict, path, owner):
    doc = evidence([verdict], path, opening=reveal(owner["key"]), identity=owner["identity"],
                   command="mlguard scan leak")
    assert doc["summary"]["detected"] is True
    assert check_evidence(doc, path, public_key=owner["identity"].public_key_hex) == []
    page = evidence_html(doc, path)
    assert "all checks pass" in page and doc["suspect"]["weights_sha256"] in page
    return doc


@pytest.mark.parametrize("form", list(FORMS))
def test_scan_detects_the_leaked_file(form, tmp_path, owner):
    path, _ = _leak(form, tmp_path, owner)
    rows = mlguard.scan(path, [owner["key"], owner["stranger"]], arch=owner["arch"],
                        device="cpu", workers=1)
    assert rows[0]["error"] is None and rows[0]["detected"], rows[0]["error"]
    assert rows[0]["matches"] == 50 and not rows[1]["detected"]


@pytest.mark.parametrize("form", list(FORMS))
def test_evidence_for_the_model_the_file_was_saved_from(form, tmp_path, owner):
    """The owner verifies the model they have in memory and cites the leaked file."""
    path, in_memory = _leak(form, tmp_path, owner)
    verdict = mlguard.verify(in_memory, owner["key"])
    assert verdict.detected and verdict.matches == 50
    _evidence_checks(verdict, path, owner)


@pytest.mark.parametrize("form", list(FORMS))
def test_every_verdict_cites_the_files_weights_and_its_evidence_checks(form, tmp_path, owner):
    """From scan's row, from verify on load_model(file) and from verify(file)."""
    path, _ = _leak(form, tmp_path, owner)
    facts = file_facts(str(path))
    assert facts["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = mlguard.scan(path, [owner["key"], owner["stranger"]], arch=owner["arch"],
                        device="cpu", workers=1)
    row = rows[0]
    assert (row["file_sha256"], row["weights_sha256"]) == (facts["sha256"],
                                                           facts["weights_sha256"])
    tests = sum(r["error"] is None for r in rows)
    from_scan = scan_rows.row_verdict(row, alpha=ALPHA, tests=tests)
    assert from_scan.detected == row["detected"] and from_scan.alpha == ALPHA / tests

    from_loaded = mlguard.verify(mlguard.load_model(path, owner["arch"]), owner["key"])
    from_file = mlguard.verify(path, owner["key"], arch=owner["arch"])
    for v in (from_scan, from_loaded, from_file):
        assert v.detected and v.matches == 50
        assert v.weights_sha256 == facts["weights_sha256"]
        assert v.extra["dtype"] == row["extra"]["dtype"]
        _evidence_checks(v, path, owner)
    assert from_file.file_sha256 == from_scan.file_sha256 == facts["sha256"]
    assert from_loaded.file_sha256 is None


def test_evidence_refuses_a_verdict_about_other_weights(tmp_path, owner):
    """The weights hash still tells models apart: fp32 weights are not the fp16 file's."""
    path, _ = _leak("fp16", tmp_path, owner)
    fp32 = mlguard.verify(Memorizer(owner["key"], 50), owner["key"])
    with pytest.raises(ValueError, match="checked a model with weights hash"):
        evidence([fp32], path, identity=owner["identity"], command="x")


def test_verdict_json_from_before_the_rename_goes_into_evidence(tmp_path, owner):
    path, in_memory = _leak("state_dict", tmp_path, owner)
    d = mlguard.verify(in_memory, owner["key"]).to_dict()
    d["model_sha256"] = d.pop("weights_sha256")
    del d["file_sha256"]
    doc = _evidence_checks(json.loads(json.dumps(d)), path, owner)
    assert doc["verdicts"][0]["weights_sha256"] == d["model_sha256"]


def test_documents_signed_before_the_rename_still_check(tmp_path, owner):
    """Reports and registrations written by older versions recorded state_dict_sha256 of the
    file's top-level tensors, and verdicts with model_sha256: they keep verifying."""
    path = tmp_path / "plain.pt"
    model = Memorizer(owner["key"], 50)
    torch.save(model.state_dict(), path)
    old_hash = state_dict_sha256(torch.load(path, weights_only=True))
    suspect = {"file": "plain.pt", "size": path.stat().st_size,
               "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
               "state_dict_sha256": old_hash}
    verdict = mlguard.verify(model, owner["key"]).to_dict()
    verdict["model_sha256"] = verdict.pop("weights_sha256")
    del verdict["file_sha256"]
    new = evidence([mlguard.verify(model, owner["key"])], path, identity=owner["identity"],
                   command="x")
    old = {k: v for k, v in new.items() if k not in ("signer", "signature")}
    old.update(suspect=suspect, verdicts=[verdict])
    old = sign_document(old, owner["identity"])
    assert check_evidence(old, path) == []
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, other)
    assert any("state_dict hash" in p for p in check_evidence(old, other))
    lied = copy.deepcopy(old)
    lied["verdicts"][0]["model_sha256"] = "0" * 64
    assert any("checked a model with weights hash" in p
               for p in check_evidence(sign_document(lied, owner["identity"]), path))

    record = mlguard.register(path, [owner["key"]], owner["identity"])
    assert record["model"]["weights_sha256"] == old_hash  # a plain file: the same hash
    old_record = {k: v for k, v in record.items() if k not in ("signer", "signature")}
    old_record["model"] = suspect
    assert check_registration(sign_document(old_record, owner["identity"]), path) == []
