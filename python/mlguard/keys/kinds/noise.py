"""noise: stored in-distribution images plus keyed uniform noise in [-a, a] (Zhang et al.,
AsiaCCS 2018); in pattern mode, K keyed noise fields, each -> its keyed class."""

from __future__ import annotations

import torch

from ...ops import keyed_words
from .base import TriggerKind, register_kind


def keyed_noise(seed: int, count: int, amplitude: float, device) -> torch.Tensor:
    """`count` keyed values uniform in [-amplitude, amplitude), float32, device-independent."""
    words = keyed_words(torch.arange(count, device=device), seed)[:, 0]
    unit = (words >> 8).float() * (2.0 ** -24)  # exact: 24-bit integers in float32
    return (unit * 2.0 - 1.0) * amplitude


@register_kind
class Noise(TriggerKind):
    name = "noise"
    stores_images = True
    pattern_mode = True

    @classmethod
    def generate_options(cls, *, noise_amplitude, **_) -> dict:
        return {"noise_amplitude": float(noise_amplitude)}

    @classmethod
    def change(cls, key, images: torch.Tensor) -> torch.Tensor:
        noise = keyed_noise(key.seed("noise"), images.numel(), key.options["noise_amplitude"],
                            images.device)
        return images + noise.reshape(images.shape)

    @classmethod
    def pattern_planes(cls, key, device) -> tuple[torch.Tensor, torch.Tensor]:
        k, (c, h, w) = key.patterns, key.shape
        field = keyed_noise(key.seed("pattern/noise"), k * c * h * w,
                            key.options["noise_amplitude"], device)
        return field.reshape(k, c, h, w), torch.ones(1, dtype=torch.bool, device=device)

    @classmethod
    def stamp(cls, images, canvas, mask, which) -> torch.Tensor:
        return (images + canvas[which]).clamp(0.0, 1.0)
