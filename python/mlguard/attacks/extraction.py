"""Model extraction: a new model trained from the victim's answers, which carries over the
function but not the weights (Lukas et al., IEEE S&P 2022, Sec. V-B: the family that removes
every scheme they study).

- retrain: the attacker labels their own images by querying the victim and trains a fresh
  model (the victim's architecture re-initialized, or `arch=` for cross-architecture
  retraining) from scratch, on hard labels (the API's top-1) or soft ones (its posterior).
  WRT's CIFAR-10 budget: 60 epochs, SGD lr 0.1 (momentum 0.9, Nesterov, weight decay 5e-4),
  the rate times 0.2 at 1/3, 7/12 and 5/6 of the epochs, batch 64.
- knockoff: Knockoff Nets (Orekondy et al., CVPR 2019, the "random" strategy): the same from
  a transfer set of another distribution, on the victim's posteriors.
- transfer: the victim's features (everything but its last layer) under a new head trained
  on the attacker's own task labels; `freeze=False` also fine-tunes the features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import Batches, fresh_student, info, last_linear, private_copy, train_epochs
from .registry import register_attack

LABELS = ("hard", "soft")


def _extract(model, data, arch, labels, epochs, lr, batch_size, seed, *, name) -> nn.Module:
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
    epochs = check_int("epochs", epochs, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    student = fresh_student(model, arch, seed, argument="arch")
    victim_mode = model.training
    model.eval()

    def loss(m, x, _y):  # the attacker's own labels are never used: the API's answers are
        with torch.no_grad():
            answer = model(x)
        logits = m(x)
        if labels == "hard":
            return F.cross_entropy(logits, answer.argmax(1))
        return -(F.softmax(answer, 1) * F.log_softmax(logits, 1)).sum(1).mean()

    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    milestones = sorted({max(1, round(epochs * f)) for f in (1 / 3, 7 / 12, 5 / 6)})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.2)
    try:
        for _ in range(epochs):
            train_epochs(student, batches, 1, optimizer, loss)
            schedule.step()
    finally:
        model.train(victim_mode)
    return info(student, extraction=name, labels=labels, epochs=epochs, lr=lr,
                queries=batches.size * epochs if batches.size is not None else None,
                attacker_samples=batches.size,
                student="victim's architecture, re-initialized" if arch is None
                else getattr(arch, "__name__", repr(arch)))


@register_attack("retrain", main_param="epochs", needs=("data",), aliases=("retraining",),
                 example={"epochs": 1})
def retrain(model: nn.Module, data, arch: Callable[[], nn.Module] | None = None,
            labels: str = "hard", epochs: int = 60, lr: float = 0.1, batch_size: int = 64,
            seed: int = 0) -> nn.Module:
    """A fresh model trained from scratch on the victim's answers to the attacker's images
    (their own labels unused); `arch` for cross-architecture retraining."""
    return _extract(model, data, arch, labels, epochs, lr, batch_size, seed, name="retrain")


@register_attack("knockoff", main_param="epochs", needs=("data",), aliases=("knockoff_nets",),
                 example={"epochs": 1})
def knockoff(model: nn.Module, data, arch: Callable[[], nn.Module] | None = None,
             labels: str = "soft", epochs: int = 4, lr: float = 0.1, batch_size: int = 64,
             seed: int = 0) -> nn.Module:
    """A fresh model trained on the victim's posteriors for a transfer set (`data`: images of
    another distribution, labels unused), as Knockoff Nets' random strategy."""
    return _extract(model, data, arch, labels, epochs, lr, batch_size, seed, name="knockoff")


@register_attack("transfer", main_param="epochs", needs=("data",),
                 aliases=("transfer_learning",), example={"epochs": 1})
def transfer(model: nn.Module, data, num_classes: int | None = None, freeze: bool = True,
             epochs: int = 5, lr: float = 1e-3, last_layer: str | None = None,
             batch_size: int = 64, seed: int = 0) -> nn.Module:
    """The victim's features under a new head (`num_classes` outputs; by default the
    victim's) trained on the attacker's own task labels; freeze=False trains all layers."""
    epochs = check_int("epochs", epochs, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    name, head = last_linear(attacked, last_layer)
    outputs = head.out_features if num_classes is None else check_int("num_classes",
                                                                      num_classes, low=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new_head = nn.Linear(head.in_features, outputs, bias=head.bias is not None)
    attacked.set_submodule(name, new_head.to(head.weight.device))
    if freeze:
        for p in attacked.parameters():
            p.requires_grad_(False)
        for p in new_head.parameters():
            p.requires_grad_(True)
    trained = [p for p in attacked.parameters() if p.requires_grad]
    train_epochs(attacked, batches, epochs, torch.optim.Adam(trained, lr=lr),
                 lambda m, x, y: F.cross_entropy(m(x), y))
    for p, original in zip(attacked.parameters(), model.parameters()):
        p.requires_grad_(original.requires_grad)
    return info(attacked, head=name, num_classes=outputs, freeze=bool(freeze), epochs=epochs,
                lr=lr, attacker_samples=batches.size)
