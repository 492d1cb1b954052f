"""Dummy-unit attack: widen every movable hidden layer with units whose contributions
cancel (Yan et al., USENIX Security 2023): the same function, a different state_dict shape."""

from __future__ import annotations

import torch
from torch import nn

from ._data import info
from ._units import generator, movable, state_of, write_back
from .registry import register_attack

_NORM_FILL = {"running_mean": 0.0, "running_var": 1.0}


@register_attack("add_dummy_units", main_param="n", aliases=("dummy",), example={"n": 4})
@torch.no_grad()
def add_dummy_units(model: nn.Module, n: int = 8, seed: int = 0) -> nn.Module:
    """A copy with `n` units appended to every movable unit space (weights/unit_graph.py).

    The new units come in pairs with identical random incoming weights (and BatchNorm
    parameters), so they compute identical values; their outgoing weights are c and -c, so
    the pair adds exactly nothing in exact arithmetic (float rounding aside). With n odd the
    last unit's outgoing weights are zero. Incoming weights are drawn at the layer's own
    spread so the new units do not stand out by size."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    attacked, graph = movable(model, "add_dummy_units")
    g = generator(seed)
    state = state_of(attacked)
    for space in graph.spaces:
        _widen(state, space, n, g)
    write_back(attacked, state)
    return info(attacked, n=n, seed=seed,
                units_added={s.name: n for s in graph.spaces}, kept=dict(graph.kept))


def _paired(shape, n: int, spread: float, g) -> torch.Tensor:
    """n rows of `shape[1:]`, equal in pairs (0,1), (2,3), ..."""
    half = torch.randn((n + 1) // 2, *shape[1:], generator=g, dtype=torch.float64) * spread
    return half.repeat_interleave(2, dim=0)[:n]


def _widen(state: dict, space, n: int, g: torch.Generator) -> None:
    for p in space.producers:
        w = state[f"{p}.weight"]
        new = _paired(w.shape, n, float(w.double().std()), g)
        state[f"{p}.weight"] = torch.cat([w, new.to(w.dtype)])
        if f"{p}.bias" in state:
            b = state[f"{p}.bias"]
            state[f"{p}.bias"] = torch.cat([b, _paired(b.shape, n, float(b.double().std()), g)
                                            .to(b.dtype)])
    for m in space.norms:
        for t in ("weight", "bias", "running_mean", "running_var"):
            key = f"{m}.{t}"
            if key not in state:
                continue
            x = state[key]
            if t in _NORM_FILL:
                new = torch.full((n,), _NORM_FILL[t], dtype=x.dtype)
            else:
                new = _paired(x.shape, n, float(x.double().std()), g).to(x.dtype)
                if t == "weight":
                    new = new.abs() + float(x.double().abs().mean())
            state[key] = torch.cat([x, new])
    for c, k in space.consumers:
        w = state[f"{c}.weight"]  # (out, in, ...): columns in blocks of k per unit
        cols = torch.randn(w.shape[0], n // 2, k, *w.shape[2:], generator=g,
                           dtype=torch.float64) * float(w.double().std())
        pairs = torch.stack([cols, -cols], dim=2).reshape(w.shape[0], (n // 2) * 2 * k,
                                                         *w.shape[2:])
        zero = torch.zeros(w.shape[0], (n % 2) * k, *w.shape[2:], dtype=torch.float64)
        state[f"{c}.weight"] = torch.cat([w, pairs.to(w.dtype), zero.to(w.dtype)], dim=1)
