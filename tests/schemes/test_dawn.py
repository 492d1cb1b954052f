"""DAWN (schemes/dawn.py): the serving wrapper, its record, the key with its snapshot, the
exact 1/(C-1) null, and a tiny extraction through the wrapper that is detected while a model
trained on the true labels of the same queries is not."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mlguard import data
from mlguard.cli.demo import batches
from mlguard.keys import keyfile
from mlguard.schemes import Embedding, ReadOptions, Suspect, get_scheme, scheme_of
from mlguard.schemes.dawn import Dawn, DawnKey, DawnRecord, DawnWrapper, query_bytes
from mlguard.verification.verdict import make_verdict

SECRET = bytes(range(1, 33))


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def fit(model, x, y, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(100):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(1)
    images, labels = data.fashion_mnist("train")
    owner_x = torch.cat([b for b, _ in batches(images[:2000], labels[:2000], 2000)])
    owner = fit(mlp(0), owner_x, labels[:2000], epochs=5)
    # The attacker's own images, normalized as the API expects.
    queries = torch.cat([b for b, _ in batches(images[2000:3000], labels[2000:3000], 1000)])
    key = DawnKey.generate(10, 0.2, secret=SECRET)
    path = tmp_path_factory.mktemp("dawn") / "record.jsonl"
    api = DawnWrapper(owner, key, path, output="labels")
    answers = torch.cat([api(q) for q in queries.split(100)])
    return key, owner, api, path, queries, answers, labels[2000:3000]


def read(key, model):
    return get_scheme("dawn").read(key, Suspect(model, None), ReadOptions())


def test_wrapper_is_deterministic_and_marks_the_rate(served):
    key, owner, api, path, queries, answers, _ = served
    again = api(queries[:100])
    assert torch.equal(again, answers[:100])  # the same query, the same answer
    owner_answers = owner(queries).argmax(1)
    wrong = answers != owner_answers
    assert api.watermarked > int(wrong.sum())  # the repeated queries were served marked ...
    assert len(DawnRecord(path)) == int(wrong.sum())  # ... and recorded once
    assert 150 <= int(wrong.sum()) <= 250  # rate 0.2 of 1000, by keyed hashing
    selected = torch.tensor([key.selected(query_bytes(q)) for q in queries])
    assert torch.equal(selected, wrong)  # exactly the selected queries, always a wrong label


def test_logits_output_keeps_scores_but_moves_the_argmax(served):
    key, owner, _, _, queries, answers, _ = served
    api = DawnWrapper(owner, key, None, output="logits")
    logits = api(queries[:200])
    assert torch.equal(logits.argmax(1), answers[:200])
    assert torch.allclose(logits.sort(1).values, owner(queries[:200]).sort(1).values)


def test_keyed_labels_are_uniform_over_the_other_classes():
    key = DawnKey.generate(5, 0.5, secret=SECRET)
    counts = torch.zeros(5)
    for i in range(4000):
        counts[key.keyed_label(i.to_bytes(4, "big"), 2)] += 1
    assert counts[2] == 0
    expected = 1000.0
    chi2 = float(((counts[[0, 1, 3, 4]] - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # chi-square, 3 dof, p = 0.001


def test_key_round_trip_snapshot_and_file(served, tmp_path):
    key, _, _, path, *_ = served
    assert scheme_of(key) is Dawn and key.to_body()["scheme"] == "dawn"
    assert DawnKey.from_body(key.to_body()) == key
    verifying = key.with_records(path)
    assert verifying.size == len(DawnRecord(path))
    assert verifying.commitment() != key.commitment()
    verifying.save(tmp_path / "v.key")
    loaded = DawnKey.from_body(keyfile.read_key_file(tmp_path / "v.key"))
    assert loaded == verifying
    assert Dawn.expected_test(loaded.to_body()) == (verifying.size, 1 / 9)
    with pytest.raises(ValueError, match="without recorded queries"):
        Dawn.expected_test(key.to_body())


def test_extracted_model_detected_true_labels_not(served):
    key, owner, _, path, queries, answers, true_labels = served
    verifying = key.with_records(path)
    stolen = fit(mlp(1), queries, answers, epochs=30)
    honest = fit(mlp(1), queries, true_labels, epochs=30)
    r = read(verifying, stolen)
    assert r.chance == pytest.approx(1 / 9) and r.total == verifying.size
    assert "exact" in r.extra["null"]
    alpha = 1e-6
    assert make_verdict("dawn", r.matches, r.total, r.chance, alpha, verifying.commitment(),
                        "0" * 64, "cpu").detected
    for model in (honest, owner):
        h = read(verifying, model)
        assert not make_verdict("dawn", h.matches, h.total, h.chance, 1e-3,
                                verifying.commitment(), "0" * 64, "cpu").detected


def test_record_of_another_key_or_edited_refused(served, tmp_path):
    key, _, _, path, *_ = served
    other = DawnKey.generate(10, 0.2, secret=bytes(32))
    with pytest.raises(ValueError, match="not one this key watermarks|not the keyed label"):
        other.with_records(path)
    with pytest.raises(ValueError, match="belongs to key"):
        DawnRecord(path, other)
    lines = path.read_text().splitlines(keepends=True)
    doc = json.loads(lines[1])
    doc["label"] = (doc["label"] + 1) % 10
    edited = tmp_path / "edited.jsonl"
    edited.write_text(lines[0] + json.dumps(doc) + "\n")
    with pytest.raises(ValueError, match="not the keyed label"):
        key.with_records(edited)
    cut = tmp_path / "cut.jsonl"
    cut.write_text(lines[0] + lines[1][:50])
    with pytest.raises(ValueError, match="incomplete"):
        key.with_records(cut)
    body = key.with_records(path).to_body()
    body["records"]["labels"][0] = (body["records"]["labels"][0] + 1) % 10
    with pytest.raises(ValueError, match="not the keyed label"):
        DawnKey.from_body(body)


def test_record_answers_checked_against_the_owner(served):
    _, owner, _, path, *_ = served
    assert DawnRecord(path).check_answers(owner) == 0
    assert DawnRecord(path).check_answers(mlp(5)) > 0


def test_embedding_adds_nothing_and_bad_arguments(served):
    key, owner, *_ = served
    emb = Dawn.embedding(key)
    assert type(emb) is Embedding
    with pytest.raises(ValueError, match="no options"):
        Dawn.embedding(key, rate=0.1)
    with pytest.raises(ValueError, match="rate"):
        DawnKey.generate(10, 0.0)
    with pytest.raises(ValueError, match="rate"):
        DawnKey.generate(10, 1.5)
    with pytest.raises(ValueError, match="num_classes"):
        DawnKey.generate(2, 0.1)
    with pytest.raises(ValueError, match="output"):
        DawnWrapper(owner, key, None, output="probs")
    with pytest.raises(ValueError, match="no recorded queries"):
        read(key, owner)
    with pytest.raises(ValueError, match="unknown fields"):
        DawnKey.from_body({**key.to_body(), "x": 1})
    with pytest.raises(ValueError, match="10 classes"):
        DawnWrapper(nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), key)(torch.zeros(2, 784))


def test_key_new_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    Dawn.add_arguments(parser)
    key = Dawn.from_arguments(parser.parse_args(["--num-classes", "10", "--rate", "0.02"]))
    assert isinstance(key, DawnKey) and key.num_classes == 10 and key.rate == 0.02
    assert Dawn.generate(num_classes=4, rate=0.5, secret=SECRET).secret == SECRET
