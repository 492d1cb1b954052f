"""Weight-noise attack: Gaussian noise scaled to each tensor's own spread."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_real
from ._data import info, private_copy
from .registry import register_attack


@register_attack("weight_noise", main_param="sigma", aliases=("noise",), example={"sigma": 0.5})
@torch.no_grad()
def weight_noise(model: nn.Module, sigma: float, seed: int = 0) -> nn.Module:
    """A copy with N(0, (sigma * std(w))^2) noise added to every floating parameter w with
    more than one entry (a one-entry tensor has no spread to scale by and is kept)."""
    sigma = check_real("sigma", sigma, low=0)
    attacked = private_copy(model)
    generator = torch.Generator().manual_seed(int(seed))
    for p in attacked.parameters():
        if not p.is_floating_point() or p.numel() < 2:
            continue
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        p.add_((noise * float(sigma) * p.detach().float().std().cpu()).to(p.device, p.dtype))
    return info(attacked, sigma=float(sigma), seed=int(seed))
