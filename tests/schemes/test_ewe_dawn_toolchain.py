"""EWE and DAWN keys through the generic toolchain: load_key, mlguard.verify and
mlguard.evaluate, with no per-scheme code outside schemes/."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mlguard
from mlguard import data
from mlguard.cli.demo import batches
from mlguard.schemes.dawn import DawnKey, DawnWrapper
from mlguard.schemes.ewe import EWE, EWEKey


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def fit(model, x, y, epochs: int, embedding=None) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb, yb = x[idx], y[idx]
            if embedding is not None:
                xb, yb = embedding.batch(xb, yb)
            loss = nn.functional.cross_entropy(model(xb), yb)
            if embedding is not None:
                loss = loss + embedding.loss(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def fashion():
    torch.set_num_threads(1)
    images, labels = data.fashion_mnist("train")
    x = torch.cat([b for b, _ in batches(images[:3000], labels[:3000], 3000)])
    return images[:3000], labels[:3000], x


def test_dawn_through_verify_and_evaluate(fashion, tmp_path):
    images, labels, x = fashion
    owner = fit(mlp(0), x[:1500], labels[:1500], epochs=3)
    key = DawnKey.generate(10, 0.2)
    api = DawnWrapper(owner, key, tmp_path / "record.jsonl", output="labels")
    answers = api(x[1500:])
    key.with_records(tmp_path / "record.jsonl").save(tmp_path / "verify.key")
    verifying = mlguard.load_key(tmp_path / "verify.key")
    stolen = fit(mlp(1), x[1500:], answers, epochs=30)
    v = mlguard.verify(stolen, verifying)
    assert v.detected and v.scheme == "dawn" and v.chance == pytest.approx(1 / 9)
    assert not mlguard.verify(owner, verifying, alpha=1e-3).detected
    report = mlguard.evaluate(stolen, verifying, [("prune", {"amount": 0.1})],
                              test_data=(x[:500], labels[:500]), progress=False)
    assert {r.attack for r in report.rows} == {"none", "prune"}
    assert all(r.scheme == "dawn" and r.total == v.total for r in report.rows)
    assert next(r for r in report.rows if r.attack == "none").matches == v.matches


def test_ewe_through_verify(fashion, tmp_path):
    images, labels, x = fashion
    reference = fit(mlp(7), x[1500:], labels[1500:], epochs=2)
    key = EWEKey.generate(images[:1500], labels[:1500], [reference], source_class=8,
                          target_class=0, size=50, mean=data.FASHION_MNIST_MEAN,
                          std=data.FASHION_MNIST_STD)
    key.save(tmp_path / "ewe.key")
    loaded = mlguard.load_key(tmp_path / "ewe.key")
    emb = EWE.embedding(loaded, images=images[:1500], labels=labels[:1500], half=32,
                        layers=("1",))
    marked = fit(mlp(0), x[:1500], labels[:1500], epochs=3, embedding=emb)
    twin = fit(mlp(0), x[:1500], labels[:1500], epochs=3)
    v = mlguard.verify(marked, loaded)
    assert v.detected and v.scheme == "ewe" and v.chance == loaded.chance
    assert not mlguard.verify(twin, loaded, alpha=1e-3).detected


def test_key_new_dawn_on_the_command_line(tmp_path, capsys):
    from mlguard.cli.main import main

    out = tmp_path / "api.key"
    assert main(["key", "new", "dawn", str(out), "--num-classes", "10", "--rate", "0.02"]) == 0
    key = mlguard.load_key(out)
    assert isinstance(key, DawnKey) and key.rate == 0.02 and key.records is None
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["key", "new", "--help"])
    text = capsys.readouterr().out
    assert "dawn: DAWN" in text and "ewe: Entangled" in text


def test_key_new_ewe_on_the_command_line(fashion, tmp_path):
    from mlguard.cli.demo import small_cnn
    from mlguard.cli.main import main

    _, labels, x = fashion
    torch.manual_seed(3)
    reference = fit(small_cnn(), x[:1000], labels[:1000], epochs=1)
    torch.save(reference.state_dict(), tmp_path / "ref.pt")
    out = tmp_path / "ewe.key"
    assert main(["key", "new", "ewe", str(out), "--references", str(tmp_path / "ref.pt"),
                 "--arch", "mlguard.cli.demo:small_cnn", "--source-class", "8",
                 "--target-class", "0", "--size", "40"]) == 0
    key = mlguard.load_key(out)
    assert isinstance(key, EWEKey) and (key.source_class, key.target_class, key.size) == (8, 0, 40)
    assert len(key.reference_matches) == 1 and key.mean == data.FASHION_MNIST_MEAN
