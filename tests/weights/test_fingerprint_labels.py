"""Customer keys record their customer id as their label (issue 10, item 5), so a scan
names the customer whose copy leaked; the label changes no key and no commitment."""

from __future__ import annotations

import pytest

from mlguard import Fingerprints, TriggerKey, load_key
from mlguard.cli import main
from mlguard.keys import keyfile

# acme's commitment under Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",),
# projection=1), as mlguard 0.1 derived it (tests/weights/test_projection_versions.py).
OLD_FINGERPRINT_COMMITMENT = "281c34a7731ad9b67c54dda16deb99e4bb1fb29d3cad704b1d58c5333eee62e3"


def test_customer_keys_are_labelled_with_the_customer_id(tmp_path):
    reg = Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",), projection=1)
    key = reg.key_for("acme")
    assert key.label == "acme"
    # The commitment mlguard 0.1 published for this customer, unchanged by the label.
    assert key.commitment() == OLD_FINGERPRINT_COMMITMENT
    assert keyfile.commitment(key.to_body()) == OLD_FINGERPRINT_COMMITMENT
    key.save(tmp_path / "k.key")
    assert load_key(tmp_path / "k.key").label == "acme"
    trigger = Fingerprints(bytes(range(32)), "trigger", num_classes=10, size=20,
                           shape=(1, 8, 8)).key_for("globex")
    assert isinstance(trigger, TriggerKey) and trigger.label == "globex"


def test_an_id_a_label_cannot_hold_still_gives_the_same_key():
    reg = Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",))
    odd = reg.key_for("line\nbreak")
    assert odd.label is None and odd == reg.key_for("line\nbreak")


def test_one_label_for_every_customer_is_refused():
    with pytest.raises(ValueError, match="label='shop'.*labelled with its customer id"):
        Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",), label="shop")


def test_fingerprint_key_cli_writes_the_label(tmp_path):
    master = tmp_path / "master.json"
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "32",
                 "--targets", "0.weight"]) == 0
    assert main(["fingerprint", "key", str(master), "--customer", "customer-0042",
                 "--out", str(tmp_path / "c.key")]) == 0
    assert load_key(tmp_path / "c.key").label == "customer-0042"
