"""Query-side transforms: a model behind an API that re-encodes or smooths every input
before it reaches the network, which is what trigger verification through that API meets.

Each returns a copy of the model with a forward pre-hook that undoes the normalization
(`mean`/`std`, the key's), applies the transform to images in [0, 1], and normalizes again.
The weights are untouched, so weight-space keys read exactly as before."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .._checks import check_int, check_real
from ._data import check_normalization, info, private_copy
from .registry import register_attack


@register_attack("jpeg", main_param="quality", needs=("normalization",), side="query",
                 example={"quality": 50})
def jpeg(model: nn.Module, quality: int = 75, mean=None, std=None) -> nn.Module:
    """Every input is JPEG-encoded at `quality` (1-95, Pillow) and decoded before the model."""
    quality = check_int("quality", quality, low=1, high=95)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([_jpeg_one(img, quality) for img in images]).to(images)

    return _with_query_transform(model, transform, mean, std, quality=quality)


@register_attack("blur", main_param="sigma", needs=("normalization",), side="query",
                 aliases=("gaussian_smoothing", "input_gaussian_smoothing"),
                 example={"sigma": 1.0})
def blur(model: nn.Module, sigma: float = 1.0, mean=None, std=None) -> nn.Module:
    """Every input gets a Gaussian blur of std `sigma` pixels (kernel 2*ceil(3 sigma)+1).

    WRT's input_gaussian_smoothing (sigma 0.5 in its CIFAR-10 config), with the border
    mirrored where WRT pads with zeros."""
    sigma = check_real("sigma", sigma, low=0, low_open=True)
    size = 2 * math.ceil(3 * sigma) + 1

    def transform(images: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(images, [size, size], [float(sigma), float(sigma)])

    return _with_query_transform(model, transform, mean, std, sigma=float(sigma))


def _jpeg_one(image: torch.Tensor, quality: int) -> torch.Tensor:
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    channels = pixels.shape[0]
    if channels not in (1, 3):
        raise ValueError(f"jpeg needs 1- or 3-channel images, got {channels} channels")
    array = pixels[0].numpy() if channels == 1 else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    decoded = torch.from_numpy(np.asarray(Image.open(buffer)).copy())
    decoded = decoded[None] if channels == 1 else decoded.permute(2, 0, 1)
    return decoded.float() / 255


def _with_query_transform(model, transform, mean, std, **figures) -> nn.Module:
    check_normalization(mean, std)
    attacked = private_copy(model)
    m = None if mean is None else torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = None if std is None else torch.tensor(std, dtype=torch.float32)[:, None, None]

    def hook(_module, args):
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"a query transform needs (N, C, H, W) image batches, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        images = x if m is None else x * s.to(x) + m.to(x)
        out = transform(images.clamp(0, 1))
        out = out if m is None else (out - m.to(x)) / s.to(x)
        return (out.to(x.dtype), *args[1:])

    attacked.register_forward_pre_hook(hook)
    return info(attacked, **figures)
