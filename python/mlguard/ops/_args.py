"""Argument helpers shared by the op wrappers."""

from __future__ import annotations

import torch

_U64 = 1 << 64


def as_seed(seed: int, name: str = "seed") -> int:
    """A 64-bit seed (signed or unsigned) as the signed int64 a torch op `int` takes."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    if not -(1 << 63) <= seed < _U64:
        raise ValueError(f"{name} must fit in 64 bits, got {seed}")
    seed %= _U64
    return seed - _U64 if seed >= 1 << 63 else seed


def check_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value
