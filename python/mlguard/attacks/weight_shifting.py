"""Weight shifting (Lukas et al., "SoK: How Robust is Image Classification Deep Neural
Network Watermarking?", IEEE S&P 2022, Sec. V-B, WRT's WeightShifting): every conv kernel
is shifted away from its mean filter and noised, w <- w - lmbda * mean_o(w) - lmbda2 * N(0,
std(w)^2), then the model is fine-tuned to recover its accuracy (WRT's CIFAR-10 config: 10
epochs, lmbda 1.5, on the attacker's data labelled by the victim)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import info, label_source, train_copy
from .registry import register_attack


@register_attack("weight_shifting", main_param="lmbda", needs=("data",),
                 example={"lmbda": 1.5, "epochs": 1})
def weight_shifting(model: nn.Module, data, lmbda: float = 1.5, lmbda2: float = 1.0,
                    epochs: int = 10, lr: float = 1e-4, labels: str = "victim",
                    batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A copy whose conv kernels are shifted by lmbda times their mean filter and noised
    with lmbda2 times their std, then fine-tuned (all layers, Adam) on the attacker's data."""
    lmbda = check_real("lmbda", lmbda, low=0)
    lmbda2 = check_real("lmbda2", lmbda2, low=0)
    target = label_source(model, labels)
    generator = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    shifted: list[str] = []

    def shift(m: nn.Module) -> None:
        for name, conv in m.named_modules():
            if isinstance(conv, nn.Conv2d):
                w = conv.weight
                noise = torch.randn(w.shape, generator=generator).to(w) * w.std()
                w -= w.mean(dim=0) * lmbda + lmbda2 * noise
                shifted.append(name)
        if not shifted:
            raise ValueError("weight_shifting shifts conv kernels; the model has no nn.Conv2d")

    attacked, batches = train_copy(model, data, lambda m, x, y: F.cross_entropy(m(x), target(x, y)),
                                   epochs, lr, batch_size, seed, prepare=shift)
    return info(attacked, lmbda=lmbda, lmbda2=lmbda2, shifted=shifted, epochs=epochs, lr=lr,
                labels=labels, attacker_samples=batches.size)
