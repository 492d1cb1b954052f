"""Tiny models, synthetic data and a model-file corpus for the scan tests.

Also imported by the scan subprocesses of the kill/resume and torchrun tests (as
``--arch scan_helper:tiny_cnn`` with tests/ on PYTHONPATH), so it must stay cheap to import.
"""

from __future__ import annotations

import os
import pickle
import time

import torch
from torch import nn

SHAPE = (1, 12, 12)
MEAN, STD = (0.5,), (0.25,)


def tiny_cnn(num_classes: int = 10, width: int = 8) -> nn.Module:
    """A small CNN for 1x12x12 inputs (any size works: adaptive pooling before the head)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
        nn.Flatten(), nn.Linear(2 * width * 9, 64), nn.ReLU(), nn.Linear(64, num_classes))


class _Slow(nn.Module):
    """Sleeps in forward, so that a scan subprocess can be killed partway through."""

    def __init__(self, inner: nn.Module, seconds: float):
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return self.inner(x)

    def state_dict(self, *args, **kwargs):  # same names as tiny_cnn's
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)


def slow_tiny_cnn(seconds: float = 0.15) -> nn.Module:
    return _Slow(tiny_cnn(), float(os.environ.get("SCAN_TEST_SLEEP", seconds)))


def synthetic_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images whose class is a bright 3x3 blob at one of 10 places, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.rand(n, *SHAPE, generator=g) * 0.3
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 5)
        images[i, 0, 2 + 5 * r:5 + 5 * r, 1 + 2 * q:4 + 2 * q] += 0.7
    return (images - MEAN[0]) / STD[0], labels


def train(model: nn.Module, steps: int, seed: int, mixer=None, lr: float = 3e-3,
          data_seed: int | None = None) -> nn.Module:
    torch.manual_seed(seed)
    x, y = synthetic_data(512, seed if data_seed is None else data_seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,))
        xb, yb = x[idx], y[idx]
        if mixer is not None:
            xb, yb = mixer(xb, yb)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    return model.eval()


class Evil:
    """Unpickling this creates `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(marker: str) -> bytes:
    return pickle.dumps(Evil(marker), protocol=2)
