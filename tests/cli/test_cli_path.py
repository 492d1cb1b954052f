"""The whole command-line path of issue 10 ("What was seen" 6): key -> train -> scan ->
verify -> evidence build -> evidence check, on small models, with `mlguard` verbs only
(training is the user's own Python)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from mlguard import TriggerMixer, load_key
from mlguard.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scan"))
from scan_helper import tiny_cnn, train  # noqa: E402

ARCH = "scan_helper:tiny_cnn"
PASS_ENV = "MLGUARD_TEST_CLI_PATH_PASSPHRASE"


def test_key_train_scan_verify_evidence_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PASS_ENV, "correct horse battery staple")
    key_file = tmp_path / "owner.key"
    assert main(["key", "new", "trigger", "--num-classes", "10", "--size", "50", "--shape",
                 "1,12,12", "--mean", "0.5", "--std", "0.25", "--out", str(key_file)]) == 0
    assert (os.stat(key_file).st_mode & 0o777) == 0o600
    before = key_file.read_bytes()
    assert main(["key", "new", "trigger", "--num-classes", "10", "--shape", "1,12,12",
                 "--out", str(key_file)]) == 2  # never overwrites a key without --force
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and "overwrite=True" not in err
    assert key_file.read_bytes() == before

    key = load_key(key_file)
    torch.manual_seed(0)
    marked = train(tiny_cnn(), 150, seed=0, mixer=TriggerMixer(key, per_batch=16, augment=False))
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    torch.save(marked.state_dict(), suspects / "leak.pt")
    torch.save(train(tiny_cnn(), 60, seed=3).state_dict(), suspects / "clean.pt")

    results = tmp_path / "results.json"
    assert main(["scan", str(suspects), "--keys", str(key_file), "--arch", ARCH, "--device",
                 "cpu", "--no-progress", "--out", str(results)]) == 1
    verdict = tmp_path / "verdict.json"
    leak, clean = str(suspects / "leak.pt"), str(suspects / "clean.pt")
    assert main(["verify", leak, "--key", str(key_file), "--arch", ARCH,
                 "--out", str(verdict)]) == 1
    assert json.loads(verdict.read_text())["detected"] is True
    assert main(["verify", clean, "--key", str(key_file), "--arch", ARCH]) == 0
    assert main(["verify", leak, "--key", str(key_file), "--arch", ARCH, "--out",
                 str(verdict)]) == 2  # exists
    assert main(["verify", leak, "--key", str(key_file)]) == 2  # trigger keys need --arch
    assert "--arch MODULE:FACTORY is required" in capsys.readouterr().err

    ident = tmp_path / "owner.identity"
    assert main(["identity", "new", str(ident), "--passphrase-env", PASS_ENV]) == 0
    for source in (verdict, results):  # from verify, and from the scan's rows
        report = tmp_path / f"evidence-{source.stem}.json"
        assert main(["evidence", "build", "--verdict", str(source), "--suspect", leak,
                     "--command", f"mlguard verify {leak} --key owner.key --arch {ARCH}",
                     "--identity", str(ident), "--passphrase-env", PASS_ENV,
                     "--out", str(report)]) == 0
        assert main(["evidence", "check", str(report), "--suspect", leak]) == 0


def test_weight_key_new(tmp_path, capsys):
    out = tmp_path / "w.key"
    assert main(["key", "new", "weight", "--bits", "64", "--targets", "auto", "--arch", ARCH,
                 "--out", str(out)]) == 0
    key = load_key(out)
    assert len(key.message) == 64 and key.targets == ("7.weight",)  # Linear(144, 64)
    assert main(["key", "new", "weight", "--bits", "64", "--targets", "auto",
                 "--out", str(tmp_path / "x.key")]) == 2
    assert "model" in capsys.readouterr().err  # 'auto' needs the architecture


@pytest.mark.parametrize("argv, message", [
    (["--shape", "3,32"], "--shape must be C,H,W"),
    (["--mean", "a"], "--mean must be comma-separated numbers"),
    (["--labels", "l.txt"], "--labels goes with --images"),
])
def test_key_new_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["key", "new", "trigger", "--num-classes", "10", "--out",
                 str(tmp_path / "k.key"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_fingerprint_master_customer_key_and_identify(tmp_path, capsys):
    """A master secret file, one key per customer, and a leaked copy named by its buyer."""
    from mlguard import embed_weights

    master = tmp_path / "master.json"
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "64", "--targets",
                 "auto", "--arch", ARCH]) == 0
    assert (os.stat(master).st_mode & 0o777) == 0o600
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "64", "--targets",
                 "auto", "--arch", ARCH]) == 2  # never replaces a master secret
    acme = tmp_path / "acme.key"
    assert main(["fingerprint", "key", str(master), "--customer", "acme", "--out",
                 str(acme)]) == 0
    assert main(["fingerprint", "key", str(master), "--customer", "acme", "--out",
                 str(acme)]) == 2
    for other in ("zeta", "bravo"):  # identify tests only ids issued a key
        assert main(["fingerprint", "key", str(master), "--customer", other, "--out",
                     str(tmp_path / f"{other}.key")]) == 0
    torch.manual_seed(0)
    model = tiny_cnn()
    embed_weights(model, load_key(acme))
    leak = tmp_path / "leak.pt"
    torch.save(model.state_dict(), leak)
    capsys.readouterr()
    assert main(["fingerprint", "identify", str(master), str(leak), "--customers", "zeta",
                 "acme", "bravo"]) == 1
    assert "IDENTIFIED  customer 'acme'" in capsys.readouterr().out
    torch.save(tiny_cnn().state_dict(), tmp_path / "other.pt")
    assert main(["fingerprint", "identify", str(master), str(tmp_path / "other.pt"),
                 "--customers", "zeta", "acme"]) == 0


def test_errors_name_the_users_path_not_a_temporary_file(tmp_path, capsys):
    out = tmp_path / "missing" / "k.key"
    assert main(["key", "new", "trigger", "--num-classes", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write '{out}'" in err and ".mlguard-" not in err
