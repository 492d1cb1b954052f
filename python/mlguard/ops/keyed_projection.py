"""Keyed projections y = R w with a keyed {+-1}/sqrt(M) matrix that never exists in memory.

docs/projection.md defines R and the read bit; csrc/keyed_projection.h describes the kernels.

- `keyed_projection`: the training path (float, fastest order, differentiable).
- `keyed_projection_sums` / `read_bits`: what a verdict reads, exact integer sums of a
  fixed-point image of w, so every device and kernel gives the same bits (projection 2).
- `keyed_projection_batched(..., projection=1)`: the fixed float32 order that keys made
  before projection 2 were read with (CPU kernel; kept so their verdicts stay the same).
"""

from __future__ import annotations

import torch

from ._args import FLOAT8, as_seed, check_tensor

PROJECTIONS = (1, 2)  # the read definitions a weight key may name (its body's "projection")
LATEST_PROJECTION = 2
_NON_FINITE = -(1 << 63)  # the shift the kernels give a model whose w has NaN or inf
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def keyed_projection(w: torch.Tensor, seed: int, bits: int) -> torch.Tensor:
    """y[t] = sum_m r(seed, t, m) * w[m] over all elements of `w`, for t < bits.

    The training path: float32 result (float64 for float64 w), summed in the device's
    fastest order (not bit-identical across devices; read verdicts with `read_bits`).
    Differentiable in `w` (the backward is mlguard::_keyed_projection_backward, R^T grad_y).
    """
    check_tensor(w, "w")
    return torch.ops.mlguard.keyed_projection(w, as_seed(seed), int(bits))


def keyed_projection_sums(w: torch.Tensor, seeds: torch.Tensor,
                          bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact read of N models x K seeds: (sums int64 (N, K, bits), shift int64 (N,)).

    sums[n, k, t] = sum_m sign(R_k[t, m]) q_n[m] with q_n = round-half-even(w[n] / 2^shift[n]),
    exact (docs/projection.md); y = sums * 2^shift / sqrt(M) approximates R w.
    """
    check_tensor(w, "w")
    check_tensor(seeds, "seeds")
    sums, shift = torch.ops.mlguard.keyed_projection_sums(w, seeds, int(bits))
    # The CPU kernel raises itself; the CUDA kernel marks such models (raising there would
    # need a host sync inside the op).
    bad = (shift == _NON_FINITE).nonzero().flatten().tolist() if shift.device.type != "cpu" else []
    if bad:
        raise ValueError(f"w must be finite, got NaN or inf in model(s) {bad[:10]}")
    return sums, shift


def read_bits(w: torch.Tensor, seeds: torch.Tensor, bits: int,
              projection: int = LATEST_PROJECTION) -> torch.Tensor:
    """The bits a verdict reads, bool (N, K, bits): R w > 0 by the given read definition."""
    if projection == 2:
        return keyed_projection_sums(w, seeds, bits)[0] > 0
    return keyed_projection_batched(w, seeds, bits, projection) > 0


def keyed_projection_batched(w: torch.Tensor, seeds: torch.Tensor, bits: int,
                             projection: int = LATEST_PROJECTION) -> torch.Tensor:
    """(N, K, bits): model n's weights w[n] projected with each of K seeds, in one call.

    projection 2 (default): float64 sums * 2^shift / sqrt(M) from the exact integer sums (its
    sign is the read bit, the same on every device). projection 1: the legacy fixed-order
    float kernel (float32, float64 for float64 w), computed on the CPU.
    """
    check_tensor(w, "w")
    check_tensor(seeds, "seeds")
    if projection not in PROJECTIONS or isinstance(projection, bool):
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if projection == 1:
        return torch.ops.mlguard.keyed_projection_v1(w.cpu(), seeds.cpu(), int(bits)).to(w.device)
    sums, shift = keyed_projection_sums(w, seeds, bits)
    scale = torch.pow(2.0, shift.to(torch.float64))  # 0 below 2^-1074 (tiny float64 w)
    return sums.double() * (scale / max(w.shape[-1], 1) ** 0.5)[:, None, None]


def _acc_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _check_w(w, op: str) -> None:
    hint = " (float8 is not supported: convert with w.float())" if w.dtype in FLOAT8 else ""
    torch._check(w.dtype in _DTYPES, lambda: f"{op}: w must be float32, float64, float16 or "
                 f"bfloat16{hint}, got {w.dtype}")


@torch.library.register_fake("mlguard::keyed_projection")
def _(w, seed, bits):
    _check_w(w, "keyed_projection")
    torch._check(bits >= 1, lambda: f"keyed_projection: bits must be in [1, 2^31], got {bits}")
    return w.new_empty((bits,), dtype=_acc_dtype(w))


def _check_batched(w, seeds, bits, op):
    _check_w(w, op)
    torch._check(bits >= 1, lambda: f"{op}: bits must be in [1, 2^31], got {bits}")
    torch._check(w.dim() == 2, lambda: f"{op}: w must be 2-D (models, weights), got {w.dim()}-D")
    torch._check(seeds.dim() == 1 and seeds.dtype == torch.int64,
                 lambda: f"{op}: seeds must be a 1-D int64 tensor")


@torch.library.register_fake("mlguard::keyed_projection_sums")
def _(w, seeds, bits):
    _check_batched(w, seeds, bits, "keyed_projection_sums")
    return (w.new_empty((w.shape[0], seeds.shape[0], bits), dtype=torch.int64),
            w.new_empty((w.shape[0],), dtype=torch.int64))


@torch.library.register_fake("mlguard::keyed_projection_v1")
def _(w, seeds, bits):
    _check_batched(w, seeds, bits, "keyed_projection_v1")
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
