"""Input reconstruction (Lukas et al., IEEE S&P 2022, Sec. V-B, WRT's InputReconstruction):
a model behind an API that passes every query through an autoencoder first, which keeps
what natural images have in common and smooths away what a trigger adds. WRT loads a
pretrained CIFAR-10 autoencoder; here the attacker trains a small convolutional one on their
own images (MSE, Adam), so it works for any data set without a download."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import Batches, check_normalization, device_of, train_epochs
from .query import _with_query_transform
from .registry import register_attack


def autoencoder(channels: int, width: int) -> nn.Module:
    """Two stride-2 convolutions down to a 4x smaller map, and back (sigmoid: pixels)."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Sigmoid())


@register_attack("input_reconstruction", main_param="epochs", needs=("data", "normalization"),
                 side="query", example={"epochs": 1, "width": 4})
def input_reconstruction(model: nn.Module, data, epochs: int = 10, width: int = 32,
                         lr: float = 1e-3, batch_size: int = 64, seed: int = 0, mean=None,
                         std=None) -> nn.Module:
    """Every input is replaced by its reconstruction by an autoencoder the attacker trained
    on their own images (`width` channels after the first convolution)."""
    epochs = check_int("epochs", epochs, low=1)
    width = check_int("width", width, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    check_normalization(mean, std)
    batches = Batches(data, batch_size, seed)
    device = device_of(model)
    first, _ = next(iter(batches))
    if first.dim() != 4:
        raise ValueError(f"input_reconstruction needs (N, C, H, W) images, got "
                         f"{tuple(first.shape)}")
    m = torch.zeros(1) if mean is None else torch.tensor(mean, dtype=torch.float32)
    s = torch.ones(1) if std is None else torch.tensor(std, dtype=torch.float32)
    m, s = m.to(device)[None, :, None, None], s.to(device)[None, :, None, None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        coder = autoencoder(first.shape[1], width).to(device)

    def reconstruct(images: torch.Tensor) -> torch.Tensor:
        out = coder.to(images.device)(images)  # kept out of the model's state_dict
        return out if out.shape[-2:] == images.shape[-2:] else \
            F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def loss(_coder, x, _y):
        pixels = (x * s + m).clamp(0, 1)
        return F.mse_loss(reconstruct(pixels), pixels)

    train_epochs(coder, batches, epochs, torch.optim.Adam(coder.parameters(), lr=lr), loss)
    coder.eval().requires_grad_(False)
    with torch.no_grad():
        x, _ = next(iter(batches))
        pixels = (x.to(device) * s + m).clamp(0, 1)
        error = float(F.mse_loss(reconstruct(pixels), pixels))
    return _with_query_transform(model, reconstruct, mean, std, epochs=epochs, width=width,
                                 lr=lr, attacker_samples=batches.size,
                                 reconstruction_mse=round(error, 6))
