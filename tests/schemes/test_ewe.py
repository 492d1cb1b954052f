"""Entangled Watermarks (schemes/ewe.py): key files, keyed generation, the conservative null,
and an embedding on a tiny Fashion-MNIST CNN that is detected, entangles, and leaves a clean
twin undetected."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mlguard import data
from mlguard.cli.demo import batches
from mlguard.keys import keyfile
from mlguard.schemes import ReadOptions, Suspect, conservative_chance, get_scheme, scheme_of
from mlguard.schemes.ewe import EWE, EWEKey, entanglement, snnl, trigger_accuracy
from mlguard.verification.verdict import make_verdict

SECRET = bytes(range(32))
N = 2000
NORM = {"mean": data.FASHION_MNIST_MEAN, "std": data.FASHION_MNIST_STD}
TEMPERATURE = 0.1


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))


def train(images, labels, seed: int, embedding=None, epochs: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for x, y in batches(images, labels, 64, order):
            if embedding is not None:
                x, y = embedding.batch(x, y)
            loss = nn.functional.cross_entropy(model(x), y)
            if embedding is not None:
                loss = loss + embedding.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def fashion():
    torch.set_num_threads(1)
    images, labels = data.fashion_mnist("train")
    return images[:N], labels[:N], images[N:2 * N], labels[N:2 * N]


@pytest.fixture(scope="module")
def setup(fashion):
    images, labels, other_images, other_labels = fashion
    reference = train(other_images, other_labels, seed=7)
    key = EWEKey.generate(images, labels, [reference], source_class=8, target_class=0,
                          size=60, secret=SECRET, **NORM)
    emb = EWE.embedding(key, images=images, labels=labels, half=32, temperature=TEMPERATURE)
    marked = train(images, labels, seed=0, embedding=emb)
    backdoor_only = train(images, labels, seed=0, embedding=EWE.embedding(
        key, images=images, labels=labels, half=32, factor=0.0))
    twin = train(images, labels, seed=0)
    return key, marked, backdoor_only, twin


def read(key, model):
    return get_scheme("ewe").read(key, Suspect(model, None), ReadOptions())


def verdict(key, reading, alpha=1e-6):
    return make_verdict("ewe", reading.matches, reading.total, reading.chance, alpha,
                        key.commitment(), "0" * 64, "cpu")


def test_key_round_trip_and_file(setup, tmp_path):
    key = setup[0]
    assert scheme_of(key) is EWE
    body = key.to_body()
    assert body["scheme"] == "ewe" and body["secret"] == SECRET.hex()
    again = EWEKey.from_body(body)
    assert again == key and torch.equal(again.triggers(), key.triggers())
    key.save(tmp_path / "k.key")
    assert EWEKey.from_body(keyfile.read_key_file(tmp_path / "k.key")) == key
    assert EWE.expected_test(body) == (60, key.chance)


@pytest.mark.parametrize("change, match", [
    ({"target_class": 8}, "must differ"),
    ({"target_class": 10}, "target_class"),
    ({"reference_matches": []}, "at least one reference"),
    ({"reference_matches": [61]}, "reference_matches"),
    ({"patch_size": 29}, "patch_size"),
    ({"size": 61}, "stored images"),
    ({"extra": 1}, "unknown fields"),
    ({"std": [0.0]}, "std"),
])
def test_tampered_body_refused(setup, change, match):
    body = {**setup[0].to_body(), **change}
    with pytest.raises(ValueError, match=match):
        EWEKey.from_body(body)


def test_tampered_file_refused(setup, tmp_path):
    path = tmp_path / "k.key"
    setup[0].save(path)
    doc = json.loads(path.read_text())
    doc["body"]["target_class"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError):
        keyfile.read_key_file(path)


def test_generation_is_keyed(fashion, setup):
    images, labels, *_ = fashion
    key, *_, twin = setup
    same = EWEKey.generate(images, labels, [twin], source_class=8, target_class=0, size=60,
                           secret=SECRET, **NORM)
    assert torch.equal(same.triggers(), key.triggers()) and same.patch[1:] == key.patch[1:]
    other = EWEKey.generate(images, labels, [twin], size=60, secret=bytes(32), **NORM)
    assert not torch.equal(other.triggers(), key.triggers())
    assert other.source_class != other.target_class  # classes drawn from the secret


def test_chance_is_the_conservative_bound(setup):
    key = setup[0]
    assert key.chance == conservative_chance(list(key.reference_matches), [60])
    assert key.chance > max(key.reference_matches) / 60
    reading = read(key, setup[3])
    assert reading.chance == key.chance and "conservative" in reading.extra["null"]


def test_marked_detected_clean_twin_not(setup):
    key, marked, _, twin = setup
    r = read(key, marked)
    assert r.total == 60 and verdict(key, r).detected
    assert r.matches == round(trigger_accuracy(marked, key) * 60)
    assert not verdict(key, read(key, twin), alpha=1e-3).detected


def test_embedding_entangles(fashion, setup):
    images, labels, *_ = fashion
    key, marked, backdoor_only, twin = setup
    targets = images[labels == key.target_class][:60]
    s = {name: entanglement(m, key, targets, temperature=TEMPERATURE)
         for name, m in (("marked", marked), ("backdoor", backdoor_only), ("twin", twin))}
    # The SNNL term raises the triggers' and target images' SNNL above what the same
    # trigger training without it gives (the loss term -factor*SNNL goes down).
    assert s["marked"] > s["backdoor"] and s["marked"] > s["twin"], s


def test_snnl_extremes():
    w = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    apart = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert snnl(apart, w, 0.1) < 0.01 < snnl(mixed, w, 0.1)


def test_bad_arguments(fashion, setup):
    images, labels, *_ = fashion
    twin = setup[3]
    with pytest.raises(ValueError, match="at least one reference"):
        EWEKey.generate(images, labels, [], secret=SECRET, **NORM)
    with pytest.raises(TypeError, match="reference_models"):
        EWEKey.generate(images, labels, twin, secret=SECRET, **NORM)
    with pytest.raises(ValueError, match="fewer than size"):
        EWEKey.generate(images, labels, [twin], source_class=8, size=10_000, **NORM)
    with pytest.raises(ValueError, match="labels must be"):
        EWEKey.generate(images, labels[:5], [twin], **NORM)
    with pytest.raises(ValueError, match="images= and labels="):
        EWE.embedding(setup[0])
    with pytest.raises(ValueError, match="temperature"):
        EWE.embedding(setup[0], images=images, labels=labels, temperature=0)
    with pytest.raises(ValueError, match="suspect needs its module"):
        EWE.read(setup[0], Suspect(None, {}), ReadOptions())
