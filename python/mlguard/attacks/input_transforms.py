"""The input-side attacks of the Watermark-Robustness-Toolbox (Lukas et al., "SoK: How
Robust is Image Classification Deep Neural Network Watermarking?", IEEE S&P 2022, Sec. V-B
"input preprocessing"): a model behind an API that smooths, noises, quantizes, squeezes or
flips every query before the network sees it. The weights are untouched.

Each works on images in [0, 1] between the key's normalization (query.py's hook), with the
defaults WRT's CIFAR-10 configs use (configs/cifar10/attack_configs/input_*.yaml). Where
WRT's code differs from what its name says, we do what the name says and the docstring
names the difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from .query import _with_query_transform
from .registry import register_attack


def _odd_kernel(kernel_size) -> int:
    kernel_size = check_int("kernel_size", kernel_size, low=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the window is centred on each pixel), got "
                         f"{kernel_size}")
    return kernel_size


@register_attack("mean_smoothing", main_param="kernel_size", needs=("normalization",),
                 side="query", aliases=("input_mean_smoothing",), example={"kernel_size": 3})
def mean_smoothing(model: nn.Module, kernel_size: int = 3, mean=None, std=None) -> nn.Module:
    """Every input is replaced by its mean over a kernel_size x kernel_size window per channel
    (zero padding at the border, as WRT's InputSmoothing pads)."""
    k = _odd_kernel(kernel_size)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=True)

    return _with_query_transform(model, transform, mean, std, kernel_size=k)


def symmetric_pad(images: torch.Tensor, p: int) -> torch.Tensor:
    """Pads H and W by `p` mirroring the edge pixel too (d c b a | a b c d), which is
    scipy.ndimage's mode="reflect" (torch's "reflect" leaves the edge pixel out)."""
    if p == 0:
        return images
    if p > min(images.shape[-2:]):
        raise ValueError(f"kernel_size {2 * p + 1} is larger than twice the image "
                         f"({tuple(images.shape[-2:])})")
    for dim in (-2, -1):
        first = images.narrow(dim, 0, p).flip(dim)
        last = images.narrow(dim, images.shape[dim] - p, p).flip(dim)
        images = torch.cat([first, images, last], dim=dim)
    return images


@register_attack("median_smoothing", main_param="kernel_size", needs=("normalization",),
                 side="query", aliases=("input_median_smoothing",), example={"kernel_size": 3})
def median_smoothing(model: nn.Module, kernel_size: int = 3, mean=None, std=None) -> nn.Module:
    """Every input is replaced by its median over a kernel_size x kernel_size window per
    channel (border mirrored, as scipy.ndimage.median_filter in WRT)."""
    k = _odd_kernel(kernel_size)

    def transform(images: torch.Tensor) -> torch.Tensor:
        padded = symmetric_pad(images, k // 2)
        windows = padded.unfold(-2, k, 1).unfold(-2, k, 1)  # (N, C, H, W, k, k)
        return windows.flatten(-2).median(dim=-1).values  # k*k odd: the exact median

    return _with_query_transform(model, transform, mean, std, kernel_size=k)


@register_attack("input_noising", main_param="noise_std", needs=("normalization",),
                 side="query", example={"noise_std": 0.01})
def input_noising(model: nn.Module, noise_std: float = 0.01, seed: int = 0, mean=None,
                  std=None) -> nn.Module:
    """Every input gets fresh Gaussian noise of std `noise_std` (pixels in [0, 1]), clipped
    to [0, 1]; the noise comes from a generator seeded with `seed`, so a run repeats."""
    noise_std = check_real("noise_std", noise_std, low=0, low_open=True)
    seed = check_int("seed", seed, low=0)
    generator = torch.Generator().manual_seed(seed)

    def transform(images: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(images.shape, generator=generator) * noise_std
        return (images + noise.to(images)).clamp(0, 1)

    return _with_query_transform(model, transform, mean, std, noise_std=noise_std, seed=seed)


@register_attack("input_quantization", main_param="divisions", needs=("normalization",),
                 side="query", example={"divisions": 16})
def input_quantization(model: nn.Module, divisions: int = 16, mean=None,
                       std=None) -> nn.Module:
    """Every pixel is replaced by the midpoint of its bin when [0, 1] is cut into `divisions`
    equal bins. (WRT's loop leaves the top bin unquantized; here every bin is.)"""
    d = check_int("divisions", divisions, low=2)

    def transform(images: torch.Tensor) -> torch.Tensor:
        bins = (images * d).floor().clamp(0, d - 1)
        return (bins + 0.5) / d

    return _with_query_transform(model, transform, mean, std, divisions=d)


@register_attack("feature_squeezing", main_param="bit_depth", needs=("normalization",),
                 side="query", example={"bit_depth": 4})
def feature_squeezing(model: nn.Module, bit_depth: int = 4, mean=None, std=None) -> nn.Module:
    """Every pixel is rounded to `bit_depth` bits (Xu et al., "Feature Squeezing", NDSS
    2018: x <- round(x (2^b - 1)) / (2^b - 1), ties to even as numpy's rint)."""
    b = check_int("bit_depth", bit_depth, low=1, high=16)
    levels = float(2 ** b - 1)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return torch.round(images * levels) / levels

    return _with_query_transform(model, transform, mean, std, bit_depth=b)


@register_attack("input_flipping", main_param="flip", needs=("normalization",), side="query",
                 example={})
def input_flipping(model: nn.Module, flip: str = "horizontal", mean=None,
                   std=None) -> nn.Module:
    """Every input is mirrored left-right (WRT's input_flipping), or top-bottom with
    flip="vertical"."""
    dims = {"horizontal": [-1], "vertical": [-2]}
    if flip not in dims:
        raise ValueError(f"flip must be 'horizontal' or 'vertical', got {flip!r}")

    def transform(images: torch.Tensor) -> torch.Tensor:
        return images.flip(dims[flip])

    return _with_query_transform(model, transform, mean, std, flip=flip)
