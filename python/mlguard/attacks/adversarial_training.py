"""Adversarial training as a removal attack (Lukas et al., IEEE S&P 2022, Sec. V-B, WRT's
AdversarialTraining; PGD of Madry et al., ICLR 2018): each epoch, PGD examples (L-inf, in
pixel space) are made from the first `n_max` attacker samples at every `eps`, added to the
attacker's data, and the model is trained one epoch on both. WRT's CIFAR-10 config: eps
0.01, 0.1 and 0.25, step 0.01, 40 iterations, 5 epochs, n_max 1000, victim's labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from .._checks import check_int, check_real
from ._data import (Batches, check_normalization, device_of, first_samples, info,
                    label_source, private_copy, train_epochs)
from .registry import register_attack


@register_attack("adversarial_training", main_param="epochs",
                 needs=("data", "normalization"),
                 example={"epochs": 1, "n_max": 16, "max_iter": 2, "eps": (0.1,)})
def adversarial_training(model: nn.Module, data, epochs: int = 5,
                         eps=(0.01, 0.1, 0.25), eps_step: float = 0.01, max_iter: int = 40,
                         n_max: int = 1000, lr: float = 1e-4, labels: str = "victim",
                         batch_size: int = 64, seed: int = 0, mean=None,
                         std=None) -> nn.Module:
    """A copy trained `epochs` times on the attacker's data plus fresh PGD examples (every
    `eps` in `eps`, made against the copy as it is at the start of each epoch)."""
    epochs = check_int("epochs", epochs, low=1)
    eps = [check_real("eps", e, low=0, low_open=True) for e in
           (eps if isinstance(eps, (list, tuple)) else [eps])]
    if not eps:
        raise ValueError("eps must name at least one perturbation size")
    eps_step = check_real("eps_step", eps_step, low=0, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    n_max = check_int("n_max", n_max, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    check_normalization(mean, std)
    target = label_source(model, labels)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    device = device_of(attacked)
    pixels = _Pixels(mean, std, device)
    x0, y0 = first_samples(batches, n_max, target, device)
    labelled = TensorDataset(*_labelled(batches, target, device))
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
    for _ in range(epochs):
        adversarial = torch.cat([_pgd(attacked, pixels, x0, y0, e, eps_step, max_iter)
                                 for e in eps])
        extra = TensorDataset(adversarial.cpu(), y0.repeat(len(eps)).cpu())
        both = Batches(DataLoader(ConcatDataset([labelled, extra]), batch_size=batch_size,
                                  shuffle=True, generator=torch.Generator().manual_seed(seed)))
        train_epochs(attacked, both, 1, optimizer, lambda m, x, y: F.cross_entropy(m(x), y))
    return info(attacked, epochs=epochs, eps=eps, eps_step=eps_step, max_iter=max_iter,
                n_max=len(x0), lr=lr, labels=labels, attacker_samples=batches.size)


class _Pixels:
    """Between the model's normalized inputs and pixels in [0, 1] (identity without mean)."""

    def __init__(self, mean, std, device):
        shape = (1, -1, 1, 1)
        self.m = None if mean is None else torch.tensor(mean, device=device).reshape(shape)
        self.s = None if std is None else torch.tensor(std, device=device).reshape(shape)

    def to_pixels(self, x):
        return x if self.m is None else x * self.s + self.m

    def to_inputs(self, p):
        return p if self.m is None else (p - self.m) / self.s


def _pgd(model, pixels: _Pixels, x, y, eps, step, iters) -> torch.Tensor:
    """Untargeted L-inf PGD from the clean point (ART's default without random init)."""
    was = model.training
    model.eval()
    clean = pixels.to_pixels(x).clamp(0, 1)
    adv = clean.clone()
    for _ in range(iters):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(pixels.to_inputs(adv)), y)
        grad, = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = torch.min(torch.max(adv, clean - eps), clean + eps).clamp(0, 1)
    model.train(was)
    return pixels.to_inputs(adv).detach()


def _labelled(batches: Batches, target, device):
    xs, ys = [], []
    for x, y in batches:
        xs.append(x)
        ys.append(target(x.to(device), y.to(device)).cpu())
    return torch.cat(xs), torch.cat(ys)
