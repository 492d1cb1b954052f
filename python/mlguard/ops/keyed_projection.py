"""mlguard::keyed_projection: y = R w with a keyed {+-1}/sqrt(M) matrix that never exists
in memory (csrc/keyed_projection.h documents the fixed summation order)."""

from __future__ import annotations

import torch

from ._args import as_seed, check_tensor


def keyed_projection(w: torch.Tensor, seed: int, bits: int) -> torch.Tensor:
    """y[t] = sum_m r(seed, t, m) * w[m] over all elements of `w`, for t < bits.

    float32 result (float64 for float64 w), bit-identical on CPU and CUDA; differentiable
    in `w` (the backward is mlguard::_keyed_projection_backward, R^T grad_y).
    """
    check_tensor(w, "w")
    return torch.ops.mlguard.keyed_projection(w, as_seed(seed), int(bits))


def keyed_projection_batched(w: torch.Tensor, seeds: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, K, bits): model n's weights w[n] projected with each of K seeds, in one call."""
    check_tensor(w, "w")
    check_tensor(seeds, "seeds")
    return torch.ops.mlguard.keyed_projection_batched(w, seeds, int(bits))


def _acc_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


@torch.library.register_fake("mlguard::keyed_projection")
def _(w, seed, bits):
    torch._check(w.dtype.is_floating_point,
                 lambda: f"keyed_projection: w must be floating point, got {w.dtype}")
    torch._check(bits >= 1, lambda: f"keyed_projection: bits must be in [1, 2^31], got {bits}")
    return w.new_empty((bits,), dtype=_acc_dtype(w))


@torch.library.register_fake("mlguard::keyed_projection_batched")
def _(w, seeds, bits):
    torch._check(w.dim() == 2, lambda: "keyed_projection_batched: w must be 2-D")
    return w.new_empty((w.shape[0], seeds.shape[0], bits), dtype=_acc_dtype(w))


@torch.library.register_fake("mlguard::_keyed_projection_backward")
def _(grad_y, seed, numel):
    return grad_y.new_empty((numel,))


def _setup_context(ctx, inputs, output):
    w, seed, _bits = inputs
    ctx.seed, ctx.shape, ctx.dtype = seed, w.shape, w.dtype


def _backward(ctx, grad_y):
    numel = 1
    for s in ctx.shape:
        numel *= s
    grad_w = torch.ops.mlguard._keyed_projection_backward(grad_y.contiguous(), ctx.seed, numel)
    return grad_w.reshape(ctx.shape).to(ctx.dtype), None, None


torch.library.register_autograd("mlguard::keyed_projection", _backward,
                                setup_context=_setup_context)
