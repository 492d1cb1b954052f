"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks
in Neural Networks", IEEE S&P 2019) as a watermark removal attack, as the Watermark-
Robustness-Toolbox runs it (Lukas et al., IEEE S&P 2022; WRT's CIFAR-10 configs: 10,000
attacker samples, 4 epochs of trigger search per class, lambda 0.01, 5 epochs of removal).

1. Reverse-engineering (Sec. IV-A, Eq. 2-3): for every class t, the smallest trigger that
   sends clean inputs to t: a mask m (H x W, in [0, 1]) and a pattern p (C x H x W, in
   [0, 1]), x' = (1 - m) x + m p in pixel space, minimizing CE(f(x'), t) + lambda |m|_1.
2. Detection (Sec. IV-B): the anomaly index of each class's |m|_1 by the median absolute
   deviation (consistency constant 1.4826); a class below the median with index > 2 is
   flagged. The removal uses the flagged triggers, or (watermarks rarely point at one class,
   and WRT does this) the smallest-norm one when none is flagged.
3. Removal: "unlearn" (Sec. VI-C) fine-tunes on the attacker's data with 20 % of it stamped
   with the trigger(s) and kept at its true labels; "prune" (Sec. VI-B) zeroes the `ratio`
   of the chosen layer's channels whose activation rises most under the triggers, then
   fine-tunes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .._checks import check_fraction, check_int, check_real
from ._data import (Batches, check_normalization, device_of, first_samples, info,
                    label_source, last_conv, private_copy, train_epochs)
from .registry import register_attack

MODES = ("unlearn", "prune")


@register_attack("neural_cleanse", main_param="mode", needs=("data", "normalization"),
                 example={"n_samples": 32, "extract_epochs": 1, "epochs": 1})
def neural_cleanse(model: nn.Module, data, mode: str = "unlearn", n_samples: int = 10000,
                   extract_epochs: int = 4, lmbda: float = 0.01, epochs: int = 5,
                   ratio: float = 0.1, layer: str | None = None, lr: float = 1e-4,
                   labels: str = "victim", batch_size: int = 64, seed: int = 0, mean=None,
                   std=None) -> nn.Module:
    """A copy cleansed of the backdoors Neural Cleanse reverse-engineers from the first
    `n_samples` attacker samples (mode "unlearn" or "prune", see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n_samples = check_int("n_samples", n_samples, low=1)
    extract_epochs = check_int("extract_epochs", extract_epochs, low=1)
    lmbda = check_real("lmbda", lmbda, low=0)
    epochs = check_int("epochs", epochs, low=1)
    ratio = check_fraction("ratio", ratio)
    lr = check_real("lr", lr, low=0, low_open=True)
    check_normalization(mean, std)
    target = label_source(model, labels)
    batches = Batches(data, batch_size, seed)
    device = device_of(model)
    x, y = first_samples(batches, n_samples, target, device)
    m = torch.zeros(1) if mean is None else torch.tensor(mean, dtype=torch.float32)
    s = torch.ones(1) if std is None else torch.tensor(std, dtype=torch.float32)
    m, s = m.to(device)[None, :, None, None], s.to(device)[None, :, None, None]
    pixels = (x * s + m).clamp(0, 1)
    attacked = private_copy(model)
    attacked.eval()
    with torch.no_grad():
        classes = attacked(x[:1]).shape[1]
    triggers = [_reverse(attacked, pixels, t, m, s, extract_epochs, lmbda, batch_size, seed)
                for t in range(classes)]
    norms = torch.tensor([float(mask.sum()) for mask, _ in triggers])
    anomaly = _anomaly_index(norms)
    flagged = [t for t in range(classes) if norms[t] < norms.median() and anomaly[t] > 2]
    used = flagged or [int(norms.argmin())]

    def stamp(images, t):
        mask, pattern = triggers[t]
        return ((1 - mask) * images + mask * pattern - m) / s

    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:len(x) // 5]
    stamped = torch.cat([stamp(pixels[pick], t) for t in used])
    pruned, hold = _prune(attacked, layer, x, stamped, ratio) if mode == "prune" else ([], None)
    clean_and_stamped = TensorDataset(torch.cat([x, stamped]).cpu(),
                                      torch.cat([y, y[pick].repeat(len(used))]).cpu())
    loader = DataLoader(clean_and_stamped, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    train_epochs(attacked, Batches(loader), epochs,
                 torch.optim.Adam(attacked.parameters(), lr=lr),
                 lambda net, a, b: F.cross_entropy(net(a), b), after_step=hold)
    extra = {"pruned_channels": pruned} if mode == "prune" else {}
    return info(attacked, mode=mode, n_samples=len(x), extract_epochs=extract_epochs,
                lmbda=lmbda, epochs=epochs, lr=lr, labels=labels,
                mask_l1=[round(float(n), 3) for n in norms],
                anomaly_index=[round(float(a), 3) for a in anomaly], flagged=flagged,
                unlearned=used, **extra)


def _reverse(model, pixels, t, m, s, epochs, lmbda, batch_size, seed):
    """(mask (1, 1, H, W), pattern (1, C, H, W)), both in [0, 1], for target class t."""
    g = torch.Generator().manual_seed(seed * 1000 + t)
    shape = pixels.shape[1:]
    mask_raw = torch.randn((1, 1, *shape[1:]), generator=g).to(pixels).requires_grad_(True)
    pattern_raw = torch.randn((1, *shape), generator=g).to(pixels).requires_grad_(True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=0.1, betas=(0.5, 0.9))
    labels = torch.full((batch_size,), t, device=pixels.device)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(pixels), generator=g)
            for idx in order.split(batch_size):
                mask = torch.tanh(mask_raw) / 2 + 0.5  # the paper's tanh reparametrization
                pattern = torch.tanh(pattern_raw) / 2 + 0.5
                stamped = (1 - mask) * pixels[idx] + mask * pattern
                loss = F.cross_entropy(model((stamped - m) / s), labels[:len(idx)]) + \
                    lmbda * mask.abs().sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    with torch.no_grad():
        return torch.tanh(mask_raw) / 2 + 0.5, torch.tanh(pattern_raw) / 2 + 0.5


def _anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    median = norms.median()
    mad = 1.4826 * (norms - median).abs().median()
    return (norms - median).abs() / mad.clamp_min(1e-12)


@torch.no_grad()
def _prune(model, layer, clean, stamped, ratio):
    """Zeroes the channels of `layer` (the last conv by default) whose mean activation rises
    most from clean to stamped inputs; returns them and the step hook that keeps them zero."""
    name, conv = last_conv(model, layer)
    seen = {}
    hook = conv.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out))
    try:
        model(clean)
        before = F.relu(seen["a"]).mean(dim=(0, 2, 3))
        model(stamped)
        after = F.relu(seen["a"]).mean(dim=(0, 2, 3))
    finally:
        hook.remove()
    count = int(ratio * conv.out_channels)
    channels = (after - before).argsort(descending=True)[:count]
    keep = torch.ones(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
    keep[channels] = 0

    @torch.no_grad()
    def hold() -> None:
        conv.weight.mul_(keep[:, None, None, None])
        if conv.bias is not None:
            conv.bias.mul_(keep)

    hold()
    return sorted(int(c) for c in channels), hold
