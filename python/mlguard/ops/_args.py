"""Argument helpers shared by the op wrappers."""

from __future__ import annotations

import torch

from .._checks import check_int

_U64 = 1 << 64
# the float8 dtypes this torch has: no op takes them, and the error says how to convert
FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                                            "float8_e5m2fnuz", "float8_e8m0fnu")
               if hasattr(torch, n))


def as_seed(seed: int, name: str = "seed") -> int:
    """A 64-bit seed (signed or unsigned) as the signed int64 a torch op `int` takes."""
    seed = check_int(name, seed)
    if not -(1 << 63) <= seed < _U64:
        raise ValueError(f"{name} must fit in 64 bits, got {seed}")
    seed %= _U64
    return seed - _U64 if seed >= 1 << 63 else seed


def check_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value
