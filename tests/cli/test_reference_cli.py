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
