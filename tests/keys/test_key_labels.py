"""Key labels (issue 10, item 5): a human name saved in the key file, covered by its MAC,
never part of the key's commitment; files without one still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlguard import TriggerKey, WeightKey, embed_weights, load_key, verify
from mlguard.keys import keyfile

SECRET, NONCE = b"\x05" * 32, b"\x06" * 32


def _weight(**kw) -> WeightKey:
    return WeightKey.generate(64, ("fc.weight",), secret=SECRET, nonce=NONCE, **kw)


def _trigger(**kw) -> TriggerKey:
    return TriggerKey.generate(10, 20, (1, 8, 8), secret=SECRET, **kw)


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_a_label_never_changes_the_commitment(tmp_path):
    plain = _weight()
    # This key's commitment was published before labels existed: it must stay this value.
    assert plain.commitment() == keyfile.commitment(plain.to_body())
    named = _weight(label="acme")
    assert named.label == "acme" and "label" not in named.to_body()
    assert named.commitment() == plain.commitment() and named == plain
    trigger = _trigger()
    assert trigger.with_label("globex").commitment() == trigger.commitment()
    assert TriggerKey.from_images(torch.rand(3, 1, 8, 8), num_classes=10, shape=(1, 8, 8),
                                  label="custom set").label == "custom set"
    named.save(tmp_path / "acme.key")
    loaded = load_key(tmp_path / "acme.key")
    assert loaded.label == "acme" and loaded.commitment() == plain.commitment()


def test_labelled_files_are_version_2_and_plain_ones_stay_version_1(tmp_path):
    _weight(label="acme").save(tmp_path / "named.key")
    _weight().save(tmp_path / "plain.key")
    named = json.loads((tmp_path / "named.key").read_text())
    plain = json.loads((tmp_path / "plain.key").read_text())
    assert (named["version"], named["meta"]) == (2, {"label": "acme"})
    assert plain["version"] == 1 and "meta" not in plain  # older mlguard reads it
    assert named["body"] == plain["body"]


def test_a_file_without_a_label_loads_and_is_named_by_its_stem(tmp_path):
    # A version 1 file as mlguard 0.2.0 wrote it (no metadata at all).
    keyfile.write_key_file(tmp_path / "owner-2025.key", _trigger().to_body())
    key = load_key(tmp_path / "owner-2025.key")
    assert key.label is None and key.path == str(tmp_path / "owner-2025.key")
    assert key.display_name == "owner-2025"
    fresh = _trigger()
    assert fresh.display_name == fresh.key_id  # in memory: no file, no label
    assert _trigger(label="acme").display_name == "acme"


def test_the_mac_covers_the_label(tmp_path):
    _weight(label="acme").save(tmp_path / "acme.key")
    WeightKey.generate(64, ("fc.weight",), label="globex").save(tmp_path / "globex.key")
    _weight().save(tmp_path / "plain.key")
    cases = {
        "edited": lambda d: d["meta"].update(label="globex"),
        "removed, version kept": lambda d: d.pop("meta"),
        "removed, version 1": lambda d: (d.pop("meta"), d.update(version=1)),
        "swapped": lambda d: d["meta"].update(
            json.loads((tmp_path / "globex.key").read_text())["meta"]),
    }
    problems = {"edited": "MAC check failed", "removed, version kept": "has no 'meta' label",
                "removed, version 1": "MAC check failed", "swapped": "MAC check failed"}
    for name, change in cases.items():
        path = tmp_path / f"{name}.key"
        path.write_bytes((tmp_path / "acme.key").read_bytes())
        _edit(path, change)
        with pytest.raises(ValueError, match=problems[name]):
            load_key(path)
    added = tmp_path / "added.key"  # a label slipped into a version 1 file
    added.write_bytes((tmp_path / "plain.key").read_bytes())
    _edit(added, lambda d: d.update(meta={"label": "acme"}))
    with pytest.raises(ValueError, match="'meta' field, which version 1 does not protect"):
        load_key(added)
    bad = tmp_path / "bad.key"
    bad.write_bytes((tmp_path / "acme.key").read_bytes())
    _edit(bad, lambda d: d["meta"].update(owner="me"))
    with pytest.raises(ValueError, match="malformed 'meta' field"):
        load_key(bad)


@pytest.mark.parametrize("label, error", [
    ("", ValueError), ("   ", ValueError), ("two\nlines", ValueError), ("tab\there", ValueError),
    ("x" * 201, ValueError), (42, TypeError), (b"acme", TypeError)])
def test_bad_labels_are_refused_by_name(label, error):
    with pytest.raises(error, match="label must be"):
        _weight(label=label)
    with pytest.raises(error, match="label must be"):
        _trigger().with_label(label)


def test_with_label_keeps_what_the_key_derived():
    key = _trigger(kind="abstract")
    key.commitment()
    relabelled = key.with_label("acme")
    assert relabelled.__dict__["_commitment"] is key.__dict__["_commitment"]
    assert relabelled.with_label(None).label is None and key.label is None
    assert torch.equal(relabelled.materialize()[0], key.materialize()[0])


def test_a_verdict_shows_the_label_of_its_key():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64))
    key = WeightKey.generate(64, ("0.weight",), label="acme")
    embed_weights(model, key)
    verdict = verify(model, key)
    assert verdict.detected and verdict.key_label == "acme"
    assert "acme" in verdict._repr_html_() and verdict.to_dict()["key_label"] == "acme"
    assert "key_label" not in verify(model, key.with_label(None)).to_dict()
