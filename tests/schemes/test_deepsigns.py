"""DeepSigns (schemes/deepsigns.py): keys, embedding in a layer's activations, exact reading."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from mlguard.keys import keyfile
from mlguard.schemes import ReadOptions, Suspect, get_scheme, scheme_of
from mlguard.schemes.deepsigns import DeepSigns, DeepSignsKey, read_message
from mlguard.verification.verdict import make_verdict

SECRET = bytes(range(32))
BITS = 24  # all matching: p = 2^-24 = 6e-8 < 1e-6


def _data(n=400, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return images, labels


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4))


def _key(secret=SECRET, **kw):
    images, labels = _data()
    args = dict(layer="1", num_classes=4, bits=BITS, count=20, mean=(0.5,), std=(0.25,))
    args.update(kw)
    return DeepSignsKey.generate(images, labels, secret=secret, **args)


def _train(model, emb, steps=150):
    images, labels = _data(seed=1)
    x = (images.float() / 255 - 0.5) / 0.25
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = nn.functional.cross_entropy(model(x[idx]), labels[idx])
        if emb is not None:
            loss = loss + emb.loss(model, x[idx], labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _verdict(key, model):
    r = DeepSigns.read(key, Suspect(model, None), ReadOptions())
    return r, make_verdict("deepsigns", r.matches, r.total, r.chance, 1e-6, key.commitment(),
                           "0" * 64, "cpu")


def test_registered():
    assert get_scheme("deepsigns") is DeepSigns
    assert scheme_of(_key()) is DeepSigns


def test_key_round_trip_through_a_file(tmp_path):
    key = _key().with_label("owner")
    key.save(tmp_path / "k.key")
    body = keyfile.read_key_file(tmp_path / "k.key")
    again = DeepSignsKey.from_body(body)
    assert again == key and again.commitment() == key.commitment()
    assert torch.equal(again.inputs, key.inputs) and again.message == key.message


@pytest.mark.parametrize("change", [
    {"message": "1" * BITS}, {"bits": BITS + 1}, {"layer": ""}, {"target_class": 4},
    {"num_classes": 1}, {"mean": [0.5, 0.5]}, {"std": [0.0]}, {"scheme": "weight"},
    {"secret": "00"},
])
def test_tampered_or_bad_body_refused(change):
    body = _key().to_body()
    if "message" in change and body["message"] == change["message"]:
        change = {"message": "0" * BITS}
    body.update(change)
    with pytest.raises(ValueError):
        DeepSignsKey.from_body(body)


def test_missing_field_refused():
    body = _key().to_body()
    del body["inputs"]
    with pytest.raises(ValueError, match="missing"):
        DeepSignsKey.from_body(body)


def test_generation_is_deterministic_from_the_secret():
    a, b, c = _key(), _key(), _key(secret=bytes(32))
    assert (a.target_class, a.message) == (b.target_class, b.message)
    assert torch.equal(a.inputs, b.inputs)
    assert a.seed == b.seed != c.seed and a.message != c.message
    images, labels = _data()
    chosen = {bytes(x.numpy().tobytes()) for x in images[labels == a.target_class]}
    assert all(bytes(x.numpy().tobytes()) in chosen for x in a.inputs)  # inputs of its class


def test_embedding_detects_and_a_clean_twin_does_not():
    key = _key()
    marked = _train(_tiny(), DeepSigns.embedding(key, strength=1.0))
    clean = _train(_tiny(), None)
    r, v = _verdict(key, marked)
    assert v.detected and r.matches == BITS and "exact" in r.extra["null"]
    assert DeepSigns.expected_test(key.to_body()) == (r.total, r.chance)
    _, v_clean = _verdict(key, clean)
    assert not v_clean.detected
    assert marked.training is False  # read_message puts the model back in its mode
    assert torch.equal(read_message(marked, key), read_message(marked, key))


def test_bad_arguments_are_named():
    images, labels = _data()
    with pytest.raises(ValueError, match="count"):
        _key(count=10_000)
    with pytest.raises(ValueError, match="mean and std"):
        _key(mean=(0.5,), std=None)
    with pytest.raises(ValueError, match="target_class"):
        _key(target_class=7)
    with pytest.raises(ValueError, match="labels"):
        DeepSignsKey.generate(images, labels.float(), layer="1", num_classes=4)
    with pytest.raises(ValueError, match="layer '9'"):
        DeepSigns.read(_key(layer="9"), Suspect(_tiny(), None), ReadOptions())
    with pytest.raises(ValueError, match="module"):
        DeepSigns.read(_key(), Suspect(None, _tiny().state_dict()), ReadOptions())
    with pytest.raises(ValueError, match="features"):  # 64 bits in a 48-unit layer
        DeepSigns.embedding(_key(bits=64)).loss(_tiny(), torch.zeros(1, 1, 8, 8), None)
    with pytest.raises(ValueError, match="strength"):
        DeepSigns.embedding(_key(), strength=0)


def test_command_line_arguments():
    parser = argparse.ArgumentParser()
    DeepSigns.add_arguments(parser)
    key = DeepSigns.from_arguments(parser.parse_args(["--layer", "8", "--bits", "32",
                                                      "--count", "10"]))
    assert isinstance(key, DeepSignsKey) and key.bits == 32 and len(key.inputs) == 10
    assert key.inputs.shape[1:] == (1, 28, 28) and key.mean is not None


def test_optional_hooks():
    key = _key()
    fresh = DeepSigns.attacker_key(key)
    assert fresh.secret != key.secret and fresh.layer == key.layer
    assert fresh.target_class == key.target_class and len(fresh.inputs) == len(key.inputs)
    assert DeepSigns.input_normalization(key) == ((0.5,), (0.25,))
    assert DeepSigns.input_shape(key) == (1, 8, 8)


def test_verify_and_load_key_through_the_registry(tmp_path):
    from mlguard import verify
    from mlguard.keys import load_key

    key = _key()
    key.save(tmp_path / "ds.key")
    loaded = load_key(tmp_path / "ds.key")
    assert loaded == key and isinstance(loaded, DeepSignsKey)
    marked = _train(_tiny(), DeepSigns.embedding(key, strength=1.0))
    v = verify(marked, loaded)
    assert v.detected and v.matches == v.total == BITS and v.chance == 0.5
    assert not verify(_train(_tiny(), None), loaded).detected


def test_scan_with_an_architecture(tmp_path):
    from mlguard import scan

    key = _key()
    torch.save(_train(_tiny(), DeepSigns.embedding(key, strength=1.0)).state_dict(),
               tmp_path / "marked.pt")
    torch.save(_train(_tiny(), None).state_dict(), tmp_path / "clean.pt")
    result = scan(str(tmp_path), [key], arch=_tiny, device="cpu", progress=False)
    assert not result.errors and len(result) == 2
    assert [r["path"].rsplit("/", 1)[-1] for r in result.detections] == ["marked.pt"]


def test_evaluate_and_key_new_through_the_toolchain(tmp_path):
    import mlguard
    from mlguard.cli import main

    key = _key()
    marked = _train(_tiny(), DeepSigns.embedding(key, strength=1.0))
    images, labels = _data(seed=2)
    x = (images.float() / 255 - 0.5) / 0.25
    report = mlguard.evaluate(marked, key, [("prune", {"amount": 0.1})], test_data=(x, labels),
                              progress=False)
    assert [r.attack for r in report.rows] == ["none", "prune"]
    assert report.rows[0].matches == BITS
    out = tmp_path / "ds.key"
    assert main(["key", "new", "deepsigns", str(out), "--layer", "8", "--count", "10"]) == 0
    made = mlguard.load_key(out)
    assert isinstance(made, DeepSignsKey) and made.bits == 32 and len(made.inputs) == 10
