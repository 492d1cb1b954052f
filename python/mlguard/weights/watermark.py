"""Embedding and reading weight-space watermarks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..keys import WeightKey
from ..ops import keyed_projection
from ..ops.keyed_projection import _acc_dtype


# The training-free embedding needs EMBED_WEIGHTS_PER_BIT carrying weights per bit. Why: the
# singular values of R (T x M, entries +-1/sqrt(M)) lie near [1 - sqrt(T/M), 1 + sqrt(T/M)]
# (Marchenko-Pastur); at T <= M/4 the smallest is >= 1/2, so setting every bit with a margin
# costs at most twice the projections' shortfall. Above M no method can set all messages
# (rank M), and at T = M the smallest singular value reaches 0. Measured with
# benchmarks/embed_capacity.py; the weight change grows like sqrt(T/M) and is already about
# the size of the weights at the limit, so far fewer bits are the practical choice.
EMBED_WEIGHTS_PER_BIT = 4


def _rms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().float().pow(2).mean().sqrt().clamp_min(1e-12)


def _check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise TypeError(f"strength must be a real number, got {type(strength).__name__} "
                        f"{strength!r}")
    if not (math.isfinite(strength) and strength > 0):
        raise ValueError(f"strength must be finite and > 0, got {strength!r}")
    return float(strength)


class WeightWatermark:
    """Uchida's regularizer on keyed projections: ``loss = loss + wm.loss(model)``.

    The logits are the projections in units of the weights' RMS (a random model's are then
    about N(0, 1)), so `strength` (Uchida's lambda) means the same for any layer size.
    """

    def __init__(self, key: WeightKey, strength: float = 0.01):
        if not isinstance(key, WeightKey):
            raise TypeError(f"key must be a WeightKey, got {type(key).__name__}")
        self.key, self.strength = key, _check_strength(strength)
        self._targets: dict[torch.device, torch.Tensor] = {}

    def _target(self, device) -> torch.Tensor:
        if device not in self._targets:
            self._targets[device] = self.key.message_tensor(device).float()
        return self._targets[device]

    def projections(self, model) -> torch.Tensor:
        w = self.key.gather(model)
        return keyed_projection(w, self.key.seed, self.key.bits)

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        """Refuses targets training cannot change (buffers, frozen parameters while grad is
        on) and more bits than weights: such a loss would train nothing, silently."""
        params = self.key.parameters(model)
        if torch.is_grad_enabled():
            for name, p in zip(self.key.targets, params):
                if not p.requires_grad:
                    raise ValueError(f"target {name!r} does not require grad (frozen): the "
                                     "watermark loss cannot change it")
        w = self.key.reduce_cat(params)
        self.key.check_capacity(w.numel())
        y = keyed_projection(w, self.key.seed, self.key.bits)
        return self.strength * F.binary_cross_entropy_with_logits(
            y / _rms(w), self._target(y.device))

    @torch.no_grad()
    def extract(self, model) -> torch.Tensor:
        """The bits the model carries: 1 where the projection is positive."""
        return (self.projections(model) > 0).long()


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
    corrective steps along single bits' directions follow where needed. The targets must be
    parameters with at least EMBED_WEIGHTS_PER_BIT (4) carrying weights per bit (after the
    key's reduction); the relative change grows like sqrt(bits / weights), so far fewer bits
    are kinder to the model. `evaluate(model) -> accuracy`, if given, is called before and
    after so the report shows what the change cost.

    Raises ValueError, with the model exactly as it was, when the targets cannot carry the
    bits, or the result is not finite or still misreads a bit; any other exception raised
    after the weights changed (e.g. from `evaluate`) also restores them first.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(key, WeightKey):
        raise TypeError(f"key must be a WeightKey, got {type(key).__name__}")
    strength = _check_strength(strength)
    params = key.parameters(model)
    key.check_capacity(key.carrying_size(params), EMBED_WEIGHTS_PER_BIT,
                       " with the training-free embedding's margin")
    for name, p in zip(key.targets, params):
        if not bool(p.isfinite().all()):
            raise ValueError(f"target {name!r} has non-finite values (NaN or inf)")
    before = evaluate(model) if evaluate is not None else None
    originals = [p.detach().clone() for p in params]
    try:
        report = _embed(params, key, strength, originals)
        report.accuracy_before = before
        report.accuracy_after = evaluate(model) if evaluate is not None else None
    except BaseException:
        for p, original in zip(params, originals):
            p.copy_(original)
        raise
    return report


def _embed(params: list[torch.nn.Parameter], key: WeightKey, strength: float,
           originals: list[torch.Tensor]) -> WeightEmbedReport:
    """Changes `params` in place; raises if the result is not finite or misreads a bit."""
    w = key.reduce_cat(originals)
    message = key.message_tensor(w.device)
    acc = _acc_dtype(w)
    signs = message.to(acc) * 2 - 1
    y = keyed_projection(w, key.seed, key.bits)
    errors_before = int(((y > 0).long() != message).sum())
    back = torch.ops.mlguard._keyed_projection_backward
    direction = back(signs, key.seed, w.numel())
    gain = signs * keyed_projection(direction, key.seed, key.bits)  # ~1 each: R R^T ~ I
    margin = strength * _rms(w).to(acc)
    usable = gain > 0
    alpha = float(((margin - signs * y) / gain)[usable].clamp_min(0).max()) * 1.001 \
        if bool(usable.any()) else 0.0
    _add_to_targets(params, key, alpha * direction)

    def read() -> torch.Tensor:
        return keyed_projection(key.reduce_cat(params), key.seed, key.bits)

    y_after = read()
    # R R^T is only nearly I (and updates are rounded): push the bits still short of the
    # margin along their own directions until all are met (a Richardson iteration).
    for _ in range(50):
        short = (margin - signs * y_after).clamp_min(0)
        if not bool((short > 0).any()):
            break
        step = back(signs * short * 1.01, key.seed, w.numel())
        _add_to_targets(params, key, step)
        y_after = read()
    if not all(bool(p.isfinite().all()) for p in params) or not bool(y_after.isfinite().all()):
        raise ValueError(f"embed_weights: the result is not finite (strength={strength!r} "
                         f"asks for a margin of {float(margin):.3g}, beyond "
                         f"{params[0].dtype}'s range?); the model is unchanged")
    errors_after = int(((y_after > 0).long() != message).sum())
    if errors_after:
        raise ValueError(f"embed_weights: {errors_after} bit error(s) remain after embedding "
                         f"{key.bits} bits in {list(key.targets)} ({params[0].dtype} rounds the "
                         "steps away?); the model is unchanged")
    return WeightEmbedReport(
        alpha=alpha, relative_weight_change=_relative_change(params, originals),
        bit_errors_before=errors_before, bit_errors_after=errors_after,
        min_margin=float((signs * y_after).min() / _rms(w)))


def _relative_change(after: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    diff = sum(float((a.detach().double() - b.double()).pow(2).sum()) for a, b in zip(after, before))
    norm = sum(float(b.double().pow(2).sum()) for b in before)
    return (diff / max(norm, 1e-30)) ** 0.5


def _add_to_targets(params: list[torch.nn.Parameter], key: WeightKey, delta: torch.Tensor) -> None:
    """Adds the gathered-vector change `delta` back into the target parameters."""
    offset = 0
    for p in params:
        mean_out = key.reduce == "mean_out"
        shape = p.shape[1:] if mean_out and p.dim() > 1 else ((1,) if mean_out else p.shape)
        n = int(torch.Size(shape).numel())
        part = delta[offset:offset + n].reshape(shape).to(p.dtype)
        p.add_(part.unsqueeze(0) if mean_out and p.dim() > 1 else part)
        offset += n
