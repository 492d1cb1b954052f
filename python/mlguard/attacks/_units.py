"""What the free-transform attacks (permute, rescale, add_dummy_units) share: the model's
movable unit spaces, and writing a changed state_dict back into a private copy."""

from __future__ import annotations

import torch
from torch import nn

from ..weights.unit_graph import UnitGraph, load_resized, unit_graph
from ._data import private_copy


def movable(model: nn.Module, attack: str,
            need_rescale: bool = False) -> tuple[nn.Module, UnitGraph]:
    """(a private copy of model, its unit graph); raises when nothing can be moved."""
    graph = unit_graph(model)
    spaces = [s for s in graph.spaces if not need_rescale or s.rescale_at in ("producers", "norms")]
    if not spaces:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(graph.kept.items())[:5]) or \
            "no Conv/Linear layer feeds another"
        raise ValueError(f"{attack}: {type(model).__name__} has no hidden units that can be "
                         f"moved without changing its function ({reasons})")
    return private_copy(model), graph


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def generator(seed) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def write_back(model: nn.Module, state: dict) -> None:
    with torch.no_grad():
        load_resized(model, state)
