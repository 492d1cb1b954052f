"""Permutation attack: re-order the hidden units of every layer where that leaves the
function unchanged (Yan et al., USENIX Security 2023, "neural structural obfuscation")."""

from __future__ import annotations

import torch
from torch import nn

from ..weights.unit_graph import take_units
from ._data import info
from ._units import generator, movable, state_of, write_back
from .registry import register_attack


@register_attack("permute", main_param="seed", aliases=("feature_permutation", "feature_shuffling"),
                 example={"seed": 1})
@torch.no_grad()
def permute(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with the units of every movable unit space (weights/unit_graph.py) put in a
    random order: the same function, other weights. Spaces the graph cannot vouch for
    (the input, the logits, anything after an operation not known to act unit by unit) stay
    as they are and are listed in attack_info["kept"]."""
    attacked, graph = movable(model, "permute")
    g = generator(seed)
    state = state_of(attacked)
    moved = {}
    for space in graph.spaces:
        order = torch.randperm(space.size, generator=g)
        take_units(state, space, order)
        moved[space.name] = int((order != torch.arange(space.size)).sum())
    write_back(attacked, state)
    return info(attacked, seed=seed, spaces=len(graph.spaces), units_moved=moved,
                kept=dict(graph.kept))
