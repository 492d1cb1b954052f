"""Exact keyed sampling on top of the keyed Philox words: uniform integers and choices."""

from __future__ import annotations

import torch

from ..ops import keyed_words

_MAX_ATTEMPTS = 64  # rejection-sampling rounds; the chance of needing more is below 2**-64


def keyed_below(seed: int, count: int, high: int, stream: int = 0) -> torch.Tensor:
    """`count` integers uniform on [0, high), exactly: rejection sampling on 32-bit words."""
    limit = (1 << 32) - (1 << 32) % high
    out = torch.empty(count, dtype=torch.int64)
    pending = torch.arange(count)
    for attempt in range(_MAX_ATTEMPTS):
        if pending.numel() == 0:
            return out
        words = keyed_words(pending, seed, stream * _MAX_ATTEMPTS + attempt)[:, 0]
        ok = words < limit
        out[pending[ok]] = words[ok] % high
        pending = pending[~ok]
    out[pending] = keyed_words(pending, seed, stream * _MAX_ATTEMPTS)[:, 0] % high
    return out


def keyed_choice(seed: int, population: int, count: int) -> torch.Tensor:
    """`count` distinct indices of range(population), in a keyed random order."""
    words = keyed_words(torch.arange(population), seed)
    # 63 random bits per item (fits int64 without overflow); ties keep index order.
    order = torch.argsort((words[:, 0] << 31) | (words[:, 1] >> 1), stable=True)
    return order[:count]
