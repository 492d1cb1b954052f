"""A mistyped customer id is refused, never tested as a customer (issue 18, item 2).

`Acme` for `acme` is a valid string: tested, it finds no one, and the leaker goes unnamed
with the same output and exit code as a clean model.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from mlguard import Fingerprints, embed_weights, load_key
from mlguard.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scan"))
from scan_helper import tiny_cnn  # noqa: E402

ARCH = "scan_helper:tiny_cnn"
SECRET = bytes(range(32))


def _leak(key) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_cnn()
    embed_weights(model, key)
    return model


def test_identify_refuses_an_id_never_issued_and_names_the_closest():
    shop = Fingerprints(SECRET, bits=64, targets=("3.weight",))
    leaked = _leak(shop.key_for("charlie"))
    shop.key_for("alice")
    with pytest.raises(ValueError, match=r"never issued a key: 'Charlie' \(did you mean "
                                         r"'charlie'"):
        shop.identify(leaked, ["alice", "Charlie"])
    assert shop.identify(leaked, ["alice", "charlie"]).customer == "charlie"
    found = shop.identify(leaked)  # every issued customer by default
    assert found.customer == "charlie" and found.tried == 2


def test_a_registry_recreated_from_its_secret_needs_the_issued_ids():
    issuer = Fingerprints(SECRET, bits=64, targets=("3.weight",))
    leaked = _leak(issuer.key_for("acme"))
    later = Fingerprints(SECRET, bits=64, targets=("3.weight",))
    with pytest.raises(ValueError, match=r"no customer has been issued a key by this "
                                         r"registry.*issued=\[\.\.\.\]"):
        later.identify(leaked)
    with pytest.raises(ValueError, match="never issued a key: 'acme'"):
        later.identify(leaked, ["acme"])
    again = Fingerprints(SECRET, bits=64, targets=("3.weight",), issued=["acme", "bravo"])
    assert again.identify(leaked).customer == "acme"
    with pytest.raises(TypeError, match="issued must be a collection"):
        Fingerprints(SECRET, bits=64, targets=("3.weight",), issued="acme")


def test_identification_prints_readably():
    shop = Fingerprints(SECRET, bits=64, targets=("3.weight",), issued=["acme", "bravo"])
    text = str(shop.identify(_leak(shop.key_for("acme"))))
    head, *rest = text.splitlines()
    assert head.startswith("IDENTIFIED  customer 'acme' among 2 (Bonferroni-adjusted p = ")
    assert rest[1].startswith("DETECTED  weight") and "key label:  acme" in text
    assert "Identification(" not in text and len(head) < 100


def _cli_master(tmp_path, *customers):
    master = tmp_path / "master.json"
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "64", "--targets",
                 "3.weight"]) == 0
    for c in customers:
        assert main(["fingerprint", "key", str(master), "--customer", c, "--out",
                     str(tmp_path / f"{c}.key")]) == 0
    return master


def test_cli_refuses_a_mistyped_id_with_exit_2_and_tests_every_issued_id_by_default(
        tmp_path, capsys):
    empty = _cli_master(tmp_path)
    capsys.readouterr()
    assert main(["fingerprint", "identify", str(empty), str(tmp_path / "any.pt")]) == 2
    assert "records no customer given a key yet" in capsys.readouterr().err
    empty.unlink()
    master = _cli_master(tmp_path, "acme", "bravo")
    assert json.loads(master.read_text())["issued"] == ["acme", "bravo"]
    assert (os.stat(master).st_mode & 0o777) == 0o600
    leak = tmp_path / "acme_copy.pt"
    torch.save(_leak(load_key(tmp_path / "acme.key")).state_dict(), leak)
    capsys.readouterr()
    assert main(["fingerprint", "identify", str(master), str(leak), "--customers", "Acme",
                 "bravo"]) == 2
    err = capsys.readouterr().err
    assert "never issued a key: 'Acme' (did you mean 'acme'?)" in err
    assert main(["fingerprint", "identify", str(master), str(leak)]) == 1
    out = capsys.readouterr().out
    assert "IDENTIFIED  customer 'acme'" in out and "2 customers tried" in out


def test_cli_a_master_without_a_record_is_refused_until_the_ids_are_recorded(
        tmp_path, capsys):
    master = _cli_master(tmp_path, "acme")
    doc = json.loads(master.read_text())
    del doc["issued"]  # a master file as mlguard 0.2 wrote it
    master.write_text(json.dumps(doc))
    leak = tmp_path / "leak.pt"
    torch.save(_leak(load_key(tmp_path / "acme.key")).state_dict(), leak)
    for argv in (["identify", str(master), str(leak), "--customers", "acme"],
                 ["identify", str(master), str(leak)],
                 ["key", str(master), "--customer", "zeta", "--out", str(tmp_path / "z.key")]):
        capsys.readouterr()
        assert main(["fingerprint", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert "has no record of the customers given a key" in err
        assert f"mlguard fingerprint issued {master} ID" in err
    assert not (tmp_path / "z.key").exists()
    assert main(["fingerprint", "issued", str(master), "acme", "bravo"]) == 0
    assert main(["fingerprint", "identify", str(master), str(leak)]) == 1
    capsys.readouterr()
    assert main(["fingerprint", "issued", str(master)]) == 0
    assert capsys.readouterr().out.split() == ["acme", "bravo"]
    # The recorded ids derive the same keys as before: the old key file still names acme.
    assert load_key(tmp_path / "acme.key") == \
        Fingerprints(doc["secret"], bits=64, targets=("3.weight",)).key_for("acme")
