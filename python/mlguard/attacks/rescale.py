"""Rescaling attack: multiply each hidden unit's output by a positive factor and divide its
consumers' weights by it; exact through ReLU-like activations and pooling (positively
homogeneous), and through BatchNorm by scaling its affine weight and bias."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..weights.unit_graph import scale_units
from ._data import info
from ._units import generator, movable, state_of, write_back
from .registry import register_attack


@register_attack("rescale", main_param="seed", example={"seed": 1})
@torch.no_grad()
def rescale(model: nn.Module, seed: int = 0, spread: float = 2.0) -> nn.Module:
    """A copy in which every unit of every rescalable space is scaled by a factor drawn
    log-uniformly from [1/spread, spread] (spread > 1) and its consumers' columns by the
    inverse: the same function, other weights."""
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not \
            (math.isfinite(spread) and spread > 1):
        raise ValueError(f"spread must be a finite number > 1, got {spread!r}")
    attacked, graph = movable(model, "rescale", need_rescale=True)
    g = generator(seed)
    state = state_of(attacked)
    scaled, kept = {}, dict(graph.kept)
    for space in graph.spaces:
        if space.rescale_at not in ("producers", "norms"):
            kept[space.name] = space.rescale_at
            continue
        u = torch.rand(space.size, generator=g, dtype=torch.float64)
        scale_units(state, space, torch.exp((2 * u - 1) * math.log(spread)))
        scaled[space.name] = space.size
    write_back(attacked, state)
    return info(attacked, seed=seed, spread=float(spread), units_scaled=scaled, kept=kept)
