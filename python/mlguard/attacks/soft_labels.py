"""Fine-tuning on softened labels, from the Watermark-Robustness-Toolbox (Lukas et al., IEEE
S&P 2022, Sec. V-B): label smoothing (Szegedy et al., CVPR 2016) spreads `epsilon` of every
target over all classes; label noise moves `epsilon` of it to another class, drawn afresh per
batch by a random permutation of the classes (WRT's LabelNoisingAttack). Both train every
layer with Adam on the attacker's data, labelled by the victim by default (WRT's CIFAR-10
label_smoothing config: true_labels False, 5 epochs, epsilon 0.3, ten times the fine-tuning
rate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import info, label_source, train_copy
from .registry import register_attack


@register_attack("label_smoothing", main_param="epsilon", needs=("data",),
                 example={"epsilon": 0.3, "epochs": 1})
def label_smoothing(model: nn.Module, data, epsilon: float = 0.3, epochs: int = 5,
                    lr: float = 1e-3, labels: str = "victim", batch_size: int = 64,
                    seed: int = 0) -> nn.Module:
    """A copy fine-tuned (all layers) with label-smoothed cross-entropy: the target is
    (1 - epsilon) one-hot + epsilon / C uniform."""
    epsilon = check_real("epsilon", epsilon, low=0, high=1)
    target = label_source(model, labels)

    def loss(m, x, y):
        return F.cross_entropy(m(x), target(x, y), label_smoothing=epsilon)

    attacked, batches = train_copy(model, data, loss, epochs, lr, batch_size, seed)
    return info(attacked, epsilon=epsilon, labels=labels, epochs=epochs, lr=lr,
                attacker_samples=batches.size)


@register_attack("label_noise", main_param="epsilon", needs=("data",),
                 aliases=("label_noising",), example={"epsilon": 0.3, "epochs": 1})
def label_noise(model: nn.Module, data, epsilon: float = 0.3, epochs: int = 5,
                lr: float = 1e-3, labels: str = "victim", batch_size: int = 64,
                seed: int = 0) -> nn.Module:
    """A copy fine-tuned (all layers) on noised soft labels: (1 - epsilon) on each sample's
    label and epsilon on pi(label), pi a random permutation of the classes drawn per batch."""
    epsilon = check_real("epsilon", epsilon, low=0, high=1)
    target = label_source(model, labels)
    generator = torch.Generator().manual_seed(check_int("seed", seed, low=0))

    def loss(m, x, y):
        logits = m(x)
        classes = logits.shape[1]
        hard = target(x, y)
        moved = torch.randperm(classes, generator=generator).to(hard.device)[hard]
        soft = (1 - epsilon) * F.one_hot(hard, classes) + epsilon * F.one_hot(moved, classes)
        return -(soft.to(logits) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

    attacked, batches = train_copy(model, data, loss, epochs, lr, batch_size, seed)
    return info(attacked, epsilon=epsilon, labels=labels, epochs=epochs, lr=lr,
                attacker_samples=batches.size)

