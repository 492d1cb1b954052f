"""Tiny Fashion-MNIST models shared by the adversarial schemes' tests: an owner model,
independent reference models, a clean twin, and fine-tuning with a scheme's embedding."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from mlguard import data
from mlguard.cli.demo import batches, small_cnn, train
from mlguard.schemes import ReadOptions, Suspect, get_scheme

MEAN, STD = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD


def fashion():
    try:
        return data.fashion_mnist("train")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")


def trained(index: int, images, labels, count: int, epochs: int = 1):
    """Model `index`: its own initialization and its own random `count` images."""
    torch.manual_seed(index)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(index))[:count]
    model = small_cnn()
    train(model, images[pick], labels[pick], epochs, "cpu", None, seed=index)
    return model.eval()


@functools.cache
def shared_models() -> dict:
    """The owner's model, 3 independent reference models and a clean twin, trained once per
    test session (both schemes' test files use them)."""
    torch.set_num_threads(1)
    x, y = fashion()
    pool_x, pool_y = x[:20000], y[:20000]
    return {"x": x, "y": y, "owner": trained(0, pool_x, pool_y, 3000, epochs=2),
            "refs": [trained(i, pool_x, pool_y, 1500) for i in (1, 2, 3)],
            "twin": trained(7, pool_x, pool_y, 1500)}


def read(scheme: str, key, model):
    return get_scheme(scheme).read(key, Suspect(model, None), ReadOptions())


def fine_tune(model, scheme: str, key, images, labels, max_epochs: int = 12, **emb):
    """The owner's model fine-tuned with the key's embedding until every trial matches."""
    model = copy.deepcopy(model)
    embedding = get_scheme(scheme).embedding(key, **emb)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(max_epochs):
        model.train()
        for x, y in batches(images, labels, 128, torch.Generator().manual_seed(epoch)):
            x, y = embedding.batch(x, y)
            loss = torch.nn.functional.cross_entropy(model(x), y) + embedding.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        reading = read(scheme, key, model.eval())
        if reading.matches == reading.total:
            break
    return model.eval()


def toolchain_checks(key, marked, twin, x_test, y_test, alpha, tmp_path):
    """mlguard.load_key, verify and evaluate on a key of a registered scheme: the marked
    model detected, the twin not, and evaluate's unattacked row equal to verify."""
    import mlguard

    key.save(tmp_path / "owner.key")
    loaded = mlguard.load_key(tmp_path / "owner.key")
    assert loaded == key and loaded.commitment() == key.commitment()
    hit, miss = mlguard.verify(marked, loaded, alpha=alpha), mlguard.verify(twin, loaded,
                                                                             alpha=alpha)
    assert hit.detected and not miss.detected, (hit.matches, miss.matches, hit.chance)
    assert hit.scheme == mlguard.schemes.scheme_of(key).name
    test = (torch.cat([x for x, _ in batches(x_test, y_test, 500)]), y_test)
    report = mlguard.evaluate(marked, {"owner": loaded}, [("prune", {"amount": 0.1})],
                              test_data=test, alpha=alpha)
    first = report.rows[0]
    assert first.attack == "none" and first.scheme == hit.scheme
    assert (first.matches, first.total, first.detected) == (hit.matches, hit.total, True)
    assert len(report.rows) == 2  # and the pruned model's row
    # the command line too: it takes the key's normalization (stored as lists) for its data
    from mlguard.cli.main import main

    torch.save(marked.state_dict(), tmp_path / "marked.pt")
    assert main(["evaluate", str(tmp_path / "marked.pt"), "--arch", "mlguard.cli.demo:small_cnn",
                 "--keys", str(tmp_path / "owner.key"), "--attacks", "cast", "--train-limit",
                 "300", "--test-limit", "100", "--device", "cpu", "--no-progress"]) == 0
