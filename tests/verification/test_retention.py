"""mlguard.retention: the fraction of a key's triggers answered with its label, as verify sees it."""

import pytest
import torch

import mlguard
from mlguard import TriggerKey, retention, verify

from memorizer import Memorizer

SECRET = bytes(range(31, 63))


@pytest.mark.parametrize("correct", [0, 13, 40])
def test_matches_verify(correct):
    k = TriggerKey.generate(num_classes=10, size=40, shape=(3, 16, 16), secret=SECRET,
                            mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    model = Memorizer(k, correct)
    v = verify(model, k)
    assert v.matches == correct
    assert retention(model, k) == v.matches / v.total == correct / 40
    assert mlguard.retention is retention


def test_cnn_retention_equals_verify_and_keeps_the_mode():
    k = TriggerKey.generate(num_classes=10, size=30, shape=(3, 16, 16), secret=SECRET,
                            mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model(torch.randn(2, 3, 16, 16))
    model.train()
    r = retention(model, k, batch_size=7)
    assert model.training
    assert r == verify(model, k).matches / 30


def test_bad_arguments():
    k = TriggerKey.generate(num_classes=10, size=5, shape=(3, 16, 16), secret=SECRET)
    with pytest.raises(TypeError, match="key must be a TriggerKey"):
        retention(torch.nn.Linear(2, 2), "owner.key")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        retention(lambda x: x, k)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        retention(torch.nn.Linear(2, 2), k, batch_size=0)
