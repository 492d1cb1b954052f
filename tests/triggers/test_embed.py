"""embed(): trains until the key is detected with margin, or warns that it was not."""

import warnings

import pytest
import torch

from mlguard import TriggerKey, embed, retention, verify
from mlguard.triggers import EMBED_MIN_RETENTION

from memorizer import Memorizer

SECRET = bytes(range(21, 53))
SHAPE = (3, 8, 8)


def key(size=20):
    return TriggerKey.generate(num_classes=10, size=size, shape=SHAPE, secret=SECRET,
                               mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


class CountingLoader:
    """Ten random batches of 16; counts the epochs it was iterated."""

    def __init__(self, extra=False):
        g = torch.Generator().manual_seed(1)
        self.batches = [(torch.randn(16, *SHAPE, generator=g),
                         torch.randint(0, 10, (16,), generator=g)) for _ in range(10)]
        if extra:
            self.batches = [(x, y, torch.arange(16)) for x, y in self.batches]
        self.epochs = 0

    def __iter__(self):
        self.epochs += 1
        return iter(self.batches)


def test_stops_once_detected_with_margin():
    k, model, loader = key(), mlp(), CountingLoader()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdict = embed(model, k, loader, 30, torch.optim.Adam(model.parameters(), lr=3e-3),
                        per_batch=8)
    assert verdict.detected and verdict.matches >= EMBED_MIN_RETENTION * k.size, str(verdict)
    assert loader.epochs < 30  # it stopped early ...
    assert verify(model, k).matches == verdict.matches
    # ... after the first epoch that reached the margin
    assert retention(model, k) >= EMBED_MIN_RETENTION


def test_warns_when_it_ends_undetected():
    k, model, loader = key(), mlp(), CountingLoader()
    # lr 0: the model cannot learn, so the key stays at chance
    with pytest.warns(UserWarning, match=r"not detected after 2 epochs.*retention [0-9]+%"
                                         r".*more epochs.*per_batch") as caught:
        verdict = embed(model, k, loader, 2, torch.optim.SGD(model.parameters(), lr=0.0),
                        per_batch=4)
    assert not verdict.detected and loader.epochs == 2
    assert f"{verdict.matches}/{k.size}" in str(caught[0].message)


class FrozenMemorizer(Memorizer):
    """Knows the key's first `correct` triggers and never learns (lr 0 on a dummy weight)."""

    def __init__(self, key, correct):
        super().__init__(key, correct)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return super().forward(x) + 0 * self.w


def test_detected_with_little_margin_warns_and_min_retention_is_a_setting():
    k = key()
    model, loader = FrozenMemorizer(k, 14), CountingLoader(extra=True)  # (x, y, idx) batches
    with pytest.warns(UserWarning, match=r"detected but with little margin after 2 epochs: "
                                         r"retention 70% \(14/20.*below min_retention=0.8"):
        verdict = embed(model, k, loader, 2, torch.optim.SGD(model.parameters(), lr=0.0))
    assert verdict.detected and loader.epochs == 2
    loader = CountingLoader()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdict = embed(model, k, loader, 5, torch.optim.SGD(model.parameters(), lr=0.0),
                        min_retention=0.7)
    assert verdict.detected and verdict.matches == 14 and loader.epochs == 1


def test_bad_arguments():
    k, model, loader = key(), mlp(), CountingLoader()
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"min_retention must be a number in \[0, 1\], got 2"):
        embed(model, k, loader, 2, opt, min_retention=2)
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1, got 0"):
        embed(model, k, loader, 0, opt)
    with pytest.raises(ValueError, match=r"per_batch=21 is larger than the key's 20 triggers"):
        embed(model, k, loader, 1, opt, per_batch=21)
    assert loader.epochs == 0
