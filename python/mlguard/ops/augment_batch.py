"""mlguard::augment_batch: a normalized, augmented batch from uint8 images in one pass
(csrc/augment_batch.h)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import check_tensor

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def augment_batch(images: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor,
                  flip: torch.Tensor, pad: int, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Output sample b is image index[b] of `images` (uint8 (N, C, H, W), best stored
    channels-last), zero-padded by `pad`, cropped at (offsets[b, 0], offsets[b, 1]) (each in
    [0, 2 pad]), flipped horizontally where flip[b], and normalized as
    (v / 255 - mean[c]) / std[c] in float32, torchvision's ToTensor + Normalize. Returns
    (B, C, H, W) in `dtype`, channels-last. Not differentiable (the input is bytes).
    """
    for value, name in ((images, "images"), (index, "index"), (offsets, "offsets"),
                        (flip, "flip")):
        check_tensor(value, name)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    channels = images.shape[1] if images.dim() == 4 else 0
    mean = [0.0] * channels if mean is None else [float(m) for m in mean]
    std = [1.0] * channels if std is None else [float(s) for s in std]
    return torch.ops.mlguard.augment_batch(images, index, offsets, flip, int(pad), mean, std,
                                           dtype)


@torch.library.register_fake("mlguard::augment_batch")
def _(images, index, offsets, flip, pad, mean, std, dtype):
    torch._check(images.dim() == 4,
                 lambda: f"augment_batch: images must be 4-D (N, C, H, W), got {images.dim()}-D")
    torch._check(images.dtype == torch.uint8,
                 lambda: f"augment_batch: images must be uint8, got {images.dtype}")
    torch._check(index.dim() == 1, lambda: "augment_batch: index must be 1-D int64")
    torch._check(tuple(offsets.shape) == (index.shape[0], 2),
                 lambda: "augment_batch: offsets must be int64 (B, 2)")
    torch._check(tuple(flip.shape) == (index.shape[0],), lambda: "augment_batch: flip must be (B,)")
    torch._check(pad >= 0, lambda: f"augment_batch: pad must be >= 0, got {pad}")
    return torch.empty((index.shape[0], *images.shape[1:]), dtype=dtype, device=images.device,
                       memory_format=torch.channels_last)
