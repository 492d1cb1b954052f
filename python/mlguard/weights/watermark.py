"""Embedding and reading weight-space watermarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..keys import WeightKey
from ..ops import keyed_projection
from ..ops.keyed_projection import _acc_dtype, keyed_projection_batched, read_bits


def _rms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().float().pow(2).mean().sqrt().clamp_min(1e-12)


class WeightWatermark:
    """Uchida's regularizer on keyed projections: ``loss = loss + wm.loss(model)``.

    The logits are the projections in units of the weights' RMS (a random model's are then
    about N(0, 1)), so `strength` (Uchida's lambda) means the same for any layer size.
    """

    def __init__(self, key: WeightKey, strength: float = 0.01):
        if not isinstance(key, WeightKey):
            raise TypeError(f"key must be a WeightKey, got {type(key).__name__}")
        if not strength > 0:
            raise ValueError(f"strength must be > 0, got {strength!r}")
        self.key, self.strength = key, float(strength)
        self._targets: dict[torch.device, torch.Tensor] = {}

    def _target(self, device) -> torch.Tensor:
        if device not in self._targets:
            self._targets[device] = self.key.message_tensor(device).float()
        return self._targets[device]

    @torch.no_grad()
    def projections(self, model) -> torch.Tensor:
        """R w as a verdict reads it (the key's projection definition; float64 for 2)."""
        return _read_projection(self.key.gather(model), self.key)

    def loss(self, model) -> torch.Tensor:
        w = self.key.gather(model)
        y = keyed_projection(w, self.key.seed, self.key.bits)
        return self.strength * F.binary_cross_entropy_with_logits(
            y / _rms(w), self._target(y.device))

    @torch.no_grad()
    def extract(self, model) -> torch.Tensor:
        """The bits the model carries, as verify reads them: 1 where the projection is positive."""
        w = self.key.gather(model)
        seeds = torch.tensor([self.key.seed], device=w.device)
        return read_bits(w.reshape(1, -1), seeds, self.key.bits, self.key.projection)[0, 0].long()


@dataclass
class WeightEmbedReport:
    alpha: float
    relative_weight_change: float  # ||change|| / ||weights|| over the target parameters
    bit_errors_before: int
    bit_errors_after: int
    min_margin: float  # smallest correct-side projection, in units of the weights' RMS
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before


@torch.no_grad()
def embed_weights(model: torch.nn.Module, key: WeightKey, strength: float = 1.0,
                  evaluate: Callable[[torch.nn.Module], float] | None = None) -> WeightEmbedReport:
    """Training-free spread-spectrum embedding: w <- w + alpha * R^T (2b - 1).

    alpha is the smallest value that makes every bit read correctly with a margin of
    `strength` times the weights' RMS; as R R^T is only nearly the identity, a few small
    corrective steps along single bits' directions follow where needed. Works best when the
    carrying weights outnumber the bits by far (the relative change grows like
    sqrt(bits / weights)). `evaluate(model) -> accuracy`, if given, is called before and
    after so the report shows what the change cost.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not strength > 0:
        raise ValueError(f"strength must be > 0, got {strength!r}")
    before = evaluate(model) if evaluate is not None else None
    wm = WeightWatermark(key)
    w = key.gather(model).detach().clone()  # a copy: the targets change in place below
    params = dict(model.named_parameters())
    originals = [params[n].detach().clone() for n in _param_names(model, key)]
    acc = _acc_dtype(w)
    signs = key.message_tensor(w.device).to(acc) * 2 - 1
    y = _read_projection(w, key).to(acc)
    errors_before = int(((y > 0).long() != key.message_tensor(w.device)).sum())
    back = torch.ops.mlguard._keyed_projection_backward
    direction = back(signs, key.seed, w.numel())
    gain = signs * keyed_projection(direction, key.seed, key.bits)  # ~1 each: R R^T ~ I
    margin = strength * _rms(w).to(acc)
    usable = gain > 0
    alpha = float(((margin - signs * y) / gain)[usable].clamp_min(0).max()) * 1.001 \
        if bool(usable.any()) else 0.0
    _add_to_targets(model, key, alpha * direction)
    y_after = wm.projections(model)
    # R R^T is only nearly I (and updates are rounded): push the bits still short of the
    # margin along their own directions until all are met (a Richardson iteration).
    for _ in range(50):
        short = (margin - signs * y_after).clamp_min(0)
        if not bool((short > 0).any()):
            break
        step = back(signs * short * 1.01, key.seed, w.numel())
        _add_to_targets(model, key, step)
        y_after = wm.projections(model)
    errors_after = int(((y_after > 0).long() != key.message_tensor(w.device)).sum())
    return WeightEmbedReport(
        alpha=alpha,
        relative_weight_change=_relative_change(
            [params[n] for n in _param_names(model, key)], originals),
        bit_errors_before=errors_before, bit_errors_after=errors_after,
        min_margin=float((signs * y_after).min() / _rms(w)),
        accuracy_before=before, accuracy_after=evaluate(model) if evaluate is not None else None)


def _read_projection(w: torch.Tensor, key: WeightKey) -> torch.Tensor:
    seeds = torch.tensor([key.seed], device=w.device)
    return keyed_projection_batched(w.detach().reshape(1, -1), seeds, key.bits, key.projection)[0, 0]


def _param_names(model: torch.nn.Module, key: WeightKey) -> list[str]:
    params = dict(model.named_parameters())
    return [name if name in params else f"module.{name}" for name in key.targets]


def _relative_change(after: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    diff = sum(float((a.detach().double() - b.double()).pow(2).sum()) for a, b in zip(after, before))
    norm = sum(float(b.double().pow(2).sum()) for b in before)
    return (diff / max(norm, 1e-30)) ** 0.5


def _add_to_targets(model: torch.nn.Module, key: WeightKey, delta: torch.Tensor) -> None:
    """Adds the gathered-vector change `delta` back into the target parameters."""
    params = dict(model.named_parameters())
    offset = 0
    for name in _param_names(model, key):
        p = params[name]
        shape = p.shape[1:] if key.reduce == "mean_out" and p.dim() > 1 else (
            (1,) if key.reduce == "mean_out" else p.shape)
        n = int(torch.Size(shape).numel())
        part = delta[offset:offset + n].reshape(shape).to(p.dtype)
        p.add_(part.unsqueeze(0) if key.reduce == "mean_out" and p.dim() > 1 else part)
        offset += n
