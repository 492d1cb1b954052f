"""Post-training quantization attacks: weights rounded to a few levels and back, and
round trips through half-precision dtypes."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from ._data import info, private_copy
from .registry import register_attack

CAST_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
               "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@register_attack("quantize", main_param="bits", aliases=("quant",), example={"bits": 4})
@torch.no_grad()
def quantize(model: nn.Module, bits: int = 8, per_channel: bool = True) -> nn.Module:
    """A copy whose floating parameters are rounded to 2^bits evenly spaced levels between
    their min and max (asymmetric uniform quantization), then stored back as floats.

    `per_channel`: each output channel (dim 0) of every tensor with >= 2 dims gets its own
    range, as int8 deployment does; otherwise one range per tensor. 1-d tensors (biases,
    norms) use one range per tensor.
    """
    bits = check_int("bits", bits, low=1, high=16)
    attacked = private_copy(model)
    levels = 2 ** bits
    for p in attacked.parameters():
        if not p.is_floating_point() or p.numel() == 0:
            continue
        rows = p.reshape(p.shape[0], -1) if (per_channel and p.dim() >= 2) else p.reshape(1, -1)
        w = rows.double()
        low = w.min(dim=1, keepdim=True).values
        high = w.max(dim=1, keepdim=True).values
        step = ((high - low) / (levels - 1)).clamp_min(torch.finfo(torch.float64).tiny)
        q = torch.round((w - low) / step).clamp(0, levels - 1) * step + low
        p.copy_(q.to(p.dtype).reshape(p.shape))
    return info(attacked, bits=bits, per_channel=per_channel)


@register_attack("cast", main_param="dtype", example={"dtype": "bf16"})
@torch.no_grad()
def cast(model: nn.Module, dtype="float16") -> nn.Module:
    """A copy whose floating parameters and buffers went to `dtype` (float16, bfloat16)
    and back: what shipping a half-precision checkpoint does to the weights."""
    target = CAST_DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if target not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float16 or bfloat16 (or 'fp16', 'bf16'), got {dtype!r}")
    attacked = private_copy(model)
    for t in list(attacked.parameters()) + list(attacked.buffers()):
        if t.is_floating_point():
            t.copy_(t.to(target).to(t.dtype))
    return info(attacked, dtype=str(target).removeprefix("torch."))
