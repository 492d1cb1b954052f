"""mlguard::mix_triggers: append augmented, normalized triggers to a batch (csrc/mix_triggers.h)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import FLOAT8, as_seed, check_tensor


def mix_triggers(x: torch.Tensor, y: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 step: int, per_batch: int, seed: int, pad: int = 0, flip: bool = False,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (cat(x, triggers), cat(y, trigger labels)) in one pass.

    Trigger j of this step is draw g = step * per_batch + j: bank image g mod len(bank),
    zero-padded by `pad` and cropped at a keyed offset, flipped on a keyed coin when `flip`,
    then normalized as (v - mean[c]) / std[c] in float32. The output keeps x's dtype, device
    and memory format; x's rows pass through unchanged and gradients flow back to x.
    """
    for value, name in ((x, "x"), (y, "y"), (bank, "bank"), (bank_labels, "bank_labels")):
        check_tensor(value, name)
    channels = x.shape[1] if x.dim() == 4 else 0
    mean = [0.0] * channels if mean is None else [float(m) for m in mean]
    std = [1.0] * channels if std is None else [float(s) for s in std]
    return torch.ops.mlguard.mix_triggers(x, y, bank, bank_labels, int(step), int(per_batch),
                                          as_seed(seed), int(pad), bool(flip), mean, std)


@torch.library.register_fake("mlguard::mix_triggers")
def _(x, y, bank, bank_labels, step, per_batch, seed, pad, flip, mean, std):
    torch._check(x.dim() == 4, lambda: f"mix_triggers: x must be 4-D (N, C, H, W), got {x.dim()}-D")
    hint = " (float8 is not supported: convert with x.float())" if x.dtype in FLOAT8 else ""
    torch._check(x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
                 lambda: f"mix_triggers: x must be float32, float64, float16 or bfloat16{hint}, "
                 f"got {x.dtype}")
    torch._check(y.dim() == 1 and y.shape[0] == x.shape[0],
                 lambda: "mix_triggers: y must be 1-D with one label per sample of x")
    torch._check(tuple(bank.shape[1:]) == tuple(x.shape[1:]),
                 lambda: "mix_triggers: bank must be (S, C, H, W) with x's image shape")
    torch._check(per_batch >= 0, lambda: f"mix_triggers: per_batch must be >= 0, got {per_batch}")
    n = x.shape[0] + per_batch
    out = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device,
                      memory_format=torch._prims_common.suggest_memory_format(x))
    return out, y.new_empty((n,))


def _setup_context(ctx, inputs, output):
    ctx.batch = inputs[0].shape[0]


def _backward(ctx, grad_out, _grad_labels):
    # The batch rows are copied unchanged; triggers depend on no differentiable input.
    return (grad_out[: ctx.batch],) + (None,) * 10


torch.library.register_autograd("mlguard::mix_triggers", _backward, setup_context=_setup_context)
