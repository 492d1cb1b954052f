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
from ..ops.keyed_projection import _acc_dtype, keyed_projection_batched, read_bits


# The training-free embedding needs EMBED_WEIGHTS_PER_BIT carrying weights per bit. Why: the
# singular values of R (T x M, entries +-1/sqrt(M)) lie near [1 - sqrt(T/M), 1 + sqrt(T/M)]
# (Marchenko-Pastur); at T <= M/4 the smallest is about 1/2 or more, so moving the bits short
# of the margin costs at most about twice their shortfall, and conjugate gradients converge in
# ~20 steps. Above M no method can set every message (rank M); near T = M the smallest
# singular value approaches 0. benchmarks/bench_embed_capacity.py (M = 16..4096, 5 trials each):
# every trial succeeds up to T = M/2, none at T = 2M; the weight change grows like
# 1.5 sqrt(T/M) (0.71-0.83 of the weights' norm at the limit), so fewer bits are kinder.
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

    @torch.no_grad()
    def projections(self, model) -> torch.Tensor:
        """R w as a verdict reads it (the key's projection definition; float64 for 2)."""
        return _read_projection(self.key.gather(model), self.key)

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
        """The bits the model carries, as verify reads them: 1 where the projection is positive."""
        w = self.key.gather(model)
        seeds = torch.tensor([self.key.seed], device=w.device)
        return read_bits(w.reshape(1, -1), seeds, self.key.bits, self.key.projection)[0, 0].long()


@dataclass
class WeightEmbedReport:
    # The change as a multiple of the classic spread-spectrum direction R^T (2b - 1) that
    # fits it best (least squares); the change itself is the minimum-norm one (embed_weights).
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
    """Training-free embedding: the smallest change w <- w + R^T z that reads every bit
    correctly with a margin of `strength` times the weights' RMS.

    Only the bits short of the margin are moved, each by its shortfall d; z solves
    (R R^T) z = d by conjugate gradients, so the change is the minimum-norm one for that
    shift (the classic w + alpha R^T (2b - 1) changes the weights several to hundreds of
    times more: benchmarks/bench_embed_capacity.py). A few rounds mop up rounding. The targets must be
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
    y = keyed_projection(w, key.seed, key.bits)  # float, for the solver; bits by the exact read
    errors_before = int(((_read_projection(w, key) > 0).long() != message).sum())
    margin = strength * _rms(w).to(acc)

    def read() -> torch.Tensor:
        return keyed_projection(key.reduce_cat(params), key.seed, key.bits)

    y_after = y
    for _ in range(_ROUNDS):
        if not bool((signs * y_after < margin).any()) or not bool(y_after.isfinite().all()):
            break
        # Aim a little past the margin so that rounding the weights keeps it.
        short = (margin * (1 + 1e-3) - signs * y_after).clamp_min(0)
        _add_to_targets(params, key, _min_norm_change(signs * short, key, w.numel()))
        y_after = read()
    if not all(bool(p.isfinite().all()) for p in params) or not bool(y_after.isfinite().all()):
        raise ValueError(f"embed_weights: the result is not finite (strength={strength!r} "
                         f"asks for a margin of {float(margin):.3g}, beyond "
                         f"{params[0].dtype}'s range?); the model is unchanged")
    errors_after = int(((_read_projection(key.reduce_cat(params), key) > 0).long()
                        != message).sum())
    if errors_after:
        raise ValueError(f"embed_weights: {errors_after} bit error(s) remain after embedding "
                         f"{key.bits} bits in {list(key.targets)} ({params[0].dtype} rounds the "
                         "steps away?); the model is unchanged")
    return WeightEmbedReport(
        alpha=_fit_along(params, originals, key, signs),
        relative_weight_change=_relative_change(params, originals),
        bit_errors_before=errors_before, bit_errors_after=errors_after,
        min_margin=float((signs * y_after).min() / _rms(w)))


_ROUNDS = 5  # solves; the first does the work, the rest mop up rounding to the weights' dtype
_CG_STEPS = 500  # at the capacity limit (condition number <= 9) about 20 are needed


def _min_norm_change(d: torch.Tensor, key: WeightKey, numel: int) -> torch.Tensor:
    """R^T z with (R R^T) z = d (conjugate gradients): the smallest change moving y by d."""
    back = torch.ops.mlguard._keyed_projection_backward
    z = torch.zeros_like(d)
    r, p = d.clone(), d.clone()
    rr, tol = r @ r, float(d.norm()) * (1e-10 if d.dtype == torch.float64 else 1e-6)
    for _ in range(_CG_STEPS):
        if not float(rr.sqrt()) > tol:  # converged, or not finite (caught by the caller)
            break
        ap = keyed_projection(back(p, key.seed, numel), key.seed, key.bits)
        step = rr / (p @ ap)
        z += step * p
        r -= step * ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return back(z, key.seed, numel)


def _fit_along(params, originals, key: WeightKey, signs: torch.Tensor) -> float:
    """The least-squares multiple of R^T (2b - 1) closest to the change made."""
    change = key.reduce_cat(params).to(signs.dtype) - key.reduce_cat(originals).to(signs.dtype)
    direction = torch.ops.mlguard._keyed_projection_backward(signs, key.seed, change.numel())
    return float((change @ direction) / (direction @ direction).clamp_min(1e-30))


def _read_projection(w: torch.Tensor, key: WeightKey) -> torch.Tensor:
    seeds = torch.tensor([key.seed], device=w.device)
    return keyed_projection_batched(w.detach().reshape(1, -1), seeds, key.bits, key.projection)[0, 0]


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
