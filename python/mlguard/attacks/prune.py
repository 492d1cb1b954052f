"""Pruning attacks: magnitude pruning of weights, and fine-pruning (Liu et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_fraction, check_int, check_real
from ._data import (Batches, device_of, info, last_conv,
                    private_copy, train_epochs, weight_tensors)
from .registry import register_attack

SCOPES = ("global", "layer")


@register_attack("prune", main_param="amount", example={"amount": 0.5})
@torch.no_grad()
def prune(model: nn.Module, amount: float, scope: str = "global") -> nn.Module:
    """A copy with the `amount` fraction of smallest-magnitude weights set to zero.

    Weights are the floating parameters with >= 2 dimensions (conv and linear; biases and
    norms are kept). "global" ranks all of them together, "layer" each tensor on its own.
    Exactly round(amount * n) entries are zeroed (ties broken by position, never by a
    threshold that could take more); the fraction is in `attack_info["pruned_fraction"]`.
    """
    amount = check_fraction("amount", amount)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    attacked = private_copy(model)
    weights = weight_tensors(attacked)
    if not weights:
        raise ValueError("the model has no weight tensors (parameters with >= 2 dims) to prune")
    total = sum(p.numel() for _, p in weights)
    if scope == "layer":
        pruned = sum(_zero_smallest([p], amount) for _, p in weights)
    else:
        pruned = _zero_smallest([p for _, p in weights], amount)
    return info(attacked, amount=amount, scope=scope, pruned=pruned, weights=total,
                pruned_fraction=pruned / total)


def _zero_smallest(tensors: list[torch.Tensor], amount: float) -> int:
    flat = torch.cat([t.detach().abs().flatten().float() for t in tensors])
    k = round(amount * flat.numel())
    if k == 0:
        return 0
    # stable sort: among equal magnitudes the earlier entries go first, so exactly k go
    order = torch.sort(flat, stable=True).indices[:k]
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[order] = False
    start = 0
    for t in tensors:
        n = t.numel()
        t.mul_(mask[start:start + n].view_as(t).to(t.dtype))
        start += n
    return k


@register_attack("fine_prune", main_param="amount", needs=("data",),
                 aliases=("fineprune", "fine-prune"), example={"amount": 0.5})
def fine_prune(model: nn.Module, data, amount: float, epochs: int = 1, lr: float = 1e-4,
               layer: str | None = None, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Fine-pruning: zero the `amount` fraction of the last conv layer's output channels
    that are least active on the attacker's clean data, then fine-tune all layers with
    those channels held at zero (Liu, Dolan-Gavitt, Garg 2018).

    Activity is the mean post-ReLU activation of each channel over the data.
    """
    amount = check_fraction("amount", amount)
    check_int("epochs", epochs, low=1)
    check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    name, conv = last_conv(attacked, layer)
    activity = _channel_activity(attacked, conv, batches)
    k = round(amount * conv.out_channels)
    dead = torch.sort(activity, stable=True).indices[:k].to(conv.weight.device)
    keep = torch.ones(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
    keep[dead] = 0

    @torch.no_grad()
    def hold_pruned() -> None:
        conv.weight.mul_(keep.view(-1, *([1] * (conv.weight.dim() - 1))))
        if conv.bias is not None:
            conv.bias.mul_(keep)

    hold_pruned()
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
    train_epochs(attacked, batches, epochs, optimizer,
                 lambda m, x, y: F.cross_entropy(m(x), y), after_step=hold_pruned)
    return info(attacked, layer=name, amount=amount, pruned_channels=sorted(dead.tolist()),
                channels=conv.out_channels, epochs=epochs, lr=lr, attacker_samples=batches.size)


@torch.no_grad()
def _channel_activity(model: nn.Module, conv: nn.Conv2d, batches: Batches) -> torch.Tensor:
    total = torch.zeros(conv.out_channels, dtype=torch.float64)
    count = 0

    def record(_module, _inputs, output):
        nonlocal count
        total.add_(output.detach().relu().double().mean(dim=(0, 2, 3)).cpu() * len(output))
        count += len(output)

    handle = conv.register_forward_hook(record)
    device = device_of(model)
    model.eval()
    try:
        for x, _ in batches:
            model(x.to(device))
    finally:
        handle.remove()
    return total / max(count, 1)
