"""mlguard::abstract_triggers: procedural trigger images from a key (csrc/abstract_triggers.h)."""

from __future__ import annotations

import torch

from ._args import as_seed, check_tensor


def abstract_triggers(indices: torch.Tensor, seed: int,
                      shape: tuple[int, int, int]) -> torch.Tensor:
    """Images `indices` of the abstract trigger family `seed`, float32 in [0, 1].

    Returns (len(indices), C, H, W) on indices' device; bit-identical on CPU and CUDA.
    """
    check_tensor(indices, "indices")
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    return torch.ops.mlguard.abstract_triggers(indices, as_seed(seed), c, h, w)


@torch.library.register_fake("mlguard::abstract_triggers")
def _(indices, seed, channels, height, width):
    torch._check(indices.dim() == 1,
                 lambda: f"abstract_triggers: indices must be 1-D, got {indices.dim()}-D")
    torch._check(indices.dtype == torch.int64,
                 lambda: f"abstract_triggers: indices must be int64, got {indices.dtype}")
    return indices.new_empty((indices.shape[0], channels, height, width), dtype=torch.float32)
