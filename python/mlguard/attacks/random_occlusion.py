"""Random occlusion (Lukas et al., IEEE S&P 2022, Sec. V-B, WRT's RandomOcclusion): fine-tune
on the attacker's data plus copies of it with a random rectangle replaced by uniform noise
(each side up to 2 x `max_ratio` of the image's, at a random place), labelled as the
originals, so the model learns to ignore small local patterns such as patch triggers.
WRT ships no CIFAR-10 config for it; its code's defaults are used (max_ratio 0.25, one
occluded copy per sample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from .._checks import check_fraction, check_int, check_real
from ._data import (Batches, check_normalization, device_of, info, label_source, private_copy,
                    train_epochs)
from .registry import register_attack


def occlude(x: torch.Tensor, max_ratio: float, generator: torch.Generator,
            low: float, high: float) -> torch.Tensor:
    """Each image with one rectangle of uniform noise in [low, high) (per-channel bounds of
    the normalized pixel range), sides in [1, 2 max_ratio x side)."""
    out = x.clone()
    n, _, h, w = x.shape
    for i in range(n):
        height = int(torch.randint(1, max(2, int(2 * max_ratio * h)), (1,), generator=generator))
        width = int(torch.randint(1, max(2, int(2 * max_ratio * w)), (1,), generator=generator))
        top = int(torch.randint(0, h - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - width + 1, (1,), generator=generator))
        noise = torch.rand((x.shape[1], height, width), generator=generator)
        out[i, :, top:top + height, left:left + width] = (low + (high - low) * noise).to(x)
    return out


@register_attack("random_occlusion", main_param="epochs", needs=("data", "normalization"),
                 example={"epochs": 1})
def random_occlusion(model: nn.Module, data, epochs: int = 5, max_ratio: float = 0.25,
                     lr: float = 1e-4, labels: str = "victim", batch_size: int = 64,
                     seed: int = 0, mean=None, std=None) -> nn.Module:
    """A copy fine-tuned (all layers) on the attacker's data and a randomly occluded copy of
    each sample, labelled as the original."""
    epochs = check_int("epochs", epochs, low=1)
    max_ratio = check_fraction("max_ratio", max_ratio)
    lr = check_real("lr", lr, low=0, low_open=True)
    check_normalization(mean, std)
    target = label_source(model, labels)
    batches = Batches(data, batch_size, seed)
    device = device_of(model)
    xs, ys = [], []
    for x, y in batches:
        xs.append(x)
        ys.append(target(x.to(device), y.to(device)).cpu())
    x, y = torch.cat(xs), torch.cat(ys)
    if x.dim() != 4:
        raise ValueError(f"random_occlusion needs (N, C, H, W) images, got {tuple(x.shape)}")
    m = torch.zeros(x.shape[1]) if mean is None else torch.tensor(mean, dtype=torch.float32)
    s = torch.ones(x.shape[1]) if std is None else torch.tensor(std, dtype=torch.float32)
    low, high = (-m / s)[:, None, None], ((1 - m) / s)[:, None, None]  # pixels 0 and 1
    occluded = occlude(x, max_ratio, torch.Generator().manual_seed(seed), low, high)
    both = ConcatDataset([TensorDataset(x, y), TensorDataset(occluded, y)])
    loader = DataLoader(both, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    attacked = private_copy(model)
    train_epochs(attacked, Batches(loader), epochs,
                 torch.optim.Adam(attacked.parameters(), lr=lr),
                 lambda net, a, b: F.cross_entropy(net(a), b))
    return info(attacked, epochs=epochs, max_ratio=max_ratio, lr=lr, labels=labels,
                attacker_samples=len(x), occluded_copies=len(x))
