"""--reference FILE on verify, scan and fingerprint identify (issue 20)."""

import json

import torch

from mlguard import Fingerprints, WeightKey, attacks
from mlguard.cli import main
from mlguard.cli.demo import small_cnn
from mlguard.weights import embed_weights

ARCH = "mlguard.cli.demo:small_cnn"


def stacked(model):
    return attacks.add_dummy_units(attacks.rescale(attacks.permute(model, 1), 2), 4, 3)


def test_verify_and_scan_with_reference(tmp_path, capsys):
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = WeightKey.generate(bits=64, targets=("7.weight",), secret=bytes(range(32)))
    embed_weights(model, key, strength=1.0)
    key.save(tmp_path / "owner.key")
    torch.save(model.state_dict(), tmp_path / "reference.pt")
    (tmp_path / "suspects").mkdir()
    torch.save(stacked(model).state_dict(), tmp_path / "suspects" / "leak.pt")
    leak, key_file = str(tmp_path / "suspects" / "leak.pt"), str(tmp_path / "owner.key")

    assert main(["verify", leak, "--key", key_file]) == 0  # missed without the reference
    assert main(["verify", leak, "--key", key_file, "--arch", ARCH, "--reference",
                 str(tmp_path / "reference.pt"), "--out", str(tmp_path / "v.json")]) == 1
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["matches"] == 64 and verdict["extra"]["alignment"]["units_dropped"] == 12
    assert main(["verify", leak, "--key", key_file, "--reference",
                 str(tmp_path / "reference.pt")]) == 2
    assert "--reference needs --arch" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "suspects"), "--keys", key_file, "--arch", ARCH,
                 "--device", "cpu", "--reference", str(tmp_path / "reference.pt"),
                 "--out", str(tmp_path / "rows.json")]) == 1


def test_fingerprint_identify_with_reference(tmp_path):
    torch.manual_seed(0)
    base = small_cnn().eval()
    torch.save(base.state_dict(), tmp_path / "base.pt")
    assert main(["fingerprint", "new", "--out", str(tmp_path / "master.json"), "--bits", "64",
                 "--targets", "7.weight"]) == 0
    assert main(["fingerprint", "issued", str(tmp_path / "master.json"), "acme", "globex"]) == 0
    master = json.loads((tmp_path / "master.json").read_text())
    shop = Fingerprints(master["secret"], bits=64, targets=("7.weight",))
    copy = small_cnn().eval()
    copy.load_state_dict(base.state_dict())
    embed_weights(copy, shop.key_for("acme"), strength=1.0)
    torch.save(stacked(copy).state_dict(), tmp_path / "leak.pt")
    args = ["fingerprint", "identify", str(tmp_path / "master.json"), str(tmp_path / "leak.pt"),
            "--customers", "globex", "acme"]
    assert main(args) == 0  # today's read names no one
    assert main(args + ["--arch", ARCH, "--reference", str(tmp_path / "base.pt")]) == 1


def test_scan_and_verify_with_a_reference_per_key(tmp_path, capsys):
    """Two owners, each with a key and a reference of their own, in one scan."""
    (tmp_path / "suspects").mkdir()
    files = {}
    for n, owner in enumerate(("alice", "bob")):
        torch.manual_seed(20 + n)
        model = small_cnn().eval()
        key = WeightKey.generate(bits=64, targets=("7.weight",), secret=bytes([n + 5] * 32))
        embed_weights(model, key, strength=1.0)
        key.save(tmp_path / f"{owner}.key")
        torch.save(model.state_dict(), tmp_path / f"{owner}-reference.pt")
        torch.save(stacked(model).state_dict(), tmp_path / "suspects" / f"{owner}-leak.pt")
        files[owner] = (str(tmp_path / f"{owner}.key"), str(tmp_path / f"{owner}-reference.pt"),
                        key.commitment())
    (a_key, a_ref, a_c), (b_key, b_ref, b_c) = files["alice"], files["bob"]
    scan_args = ["scan", str(tmp_path / "suspects"), "--keys", a_key, b_key, "--arch", ARCH,
                 "--device", "cpu", "--force", "--out", str(tmp_path / "rows.json")]
    assert main(scan_args + ["--reference", f"{a_key}={a_ref}",
                             "--reference", f"{b_key}={b_ref}"]) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    hits = sorted((r["path"].rsplit("/", 1)[-1], r["commitment"] == a_c)
                  for r in rows if r["detected"])
    assert hits == [("alice-leak.pt", True), ("bob-leak.pt", False)]
    # FILE for all keys, KEYFILE=FILE for one: bob's key reads against bob's reference
    assert main(scan_args + ["--reference", a_ref, "--reference", f"{b_key}={b_ref}"]) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert sum(r["detected"] for r in rows) == 2
    # only alice's reference for all keys: bob's copy is not brought back
    assert main(scan_args + ["--reference", a_ref]) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows if r["detected"]] == ["alice-leak.pt"]

    leak = str(tmp_path / "suspects" / "bob-leak.pt")
    assert main(["verify", leak, "--key", b_key, "--arch", ARCH,
                 "--reference", f"{b_key}={b_ref}"]) == 1
    capsys.readouterr()
    assert main(["verify", leak, "--key", b_key, "--arch", ARCH,
                 "--reference", f"{a_key}={a_ref}"]) == 2  # names another key
    assert "is not one of the keys read" in capsys.readouterr().err
    assert main(scan_args + ["--reference", a_ref, "--reference", b_ref]) == 2
    assert "two references for all keys" in capsys.readouterr().err
    assert main(scan_args + ["--reference", f"{a_key}={a_ref}",
                             "--reference", f"{a_key}={b_ref}"]) == 2
    assert "given two references" in capsys.readouterr().err
    assert main(scan_args + ["--reference", f"{tmp_path / 'nokey.key'}={a_ref}"]) == 2
    assert "no such key file" in capsys.readouterr().err
