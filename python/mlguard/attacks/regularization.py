"""Weight regularization (Lukas et al., IEEE S&P 2022, Sec. V-B, WRT's Regularization):
train under strong L2 weight decay, which shrinks what the task does not need, then
fine-tune without it until the loss stops improving (WRT's CIFAR-10 config: decay 0.1 for
5 epochs, then at most 50 epochs with patience 5). WRT trains with the owner's optimizer
(SGD, momentum 0.9, Nesterov); here too, at rate `lr`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import Batches, device_of, info, label_source, private_copy, train_epochs
from .registry import register_attack


@register_attack("regularization", main_param="l2_decay", needs=("data",),
                 aliases=("weight_regularization",),
                 example={"l2_decay": 0.1, "reg_epochs": 1, "max_ft_epochs": 2, "patience": 1})
def regularization(model: nn.Module, data, l2_decay: float = 0.1, reg_epochs: int = 5,
                   max_ft_epochs: int = 50, patience: int = 5, lr: float = 0.01,
                   labels: str = "victim", batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A copy trained `reg_epochs` under L2 decay `l2_decay`, then fine-tuned without it
    until its loss on the attacker's data has not improved for `patience` epochs (at most
    `max_ft_epochs`); the best epoch's weights are kept."""
    l2_decay = check_real("l2_decay", l2_decay, low=0, low_open=True)
    reg_epochs = check_int("reg_epochs", reg_epochs, low=1)
    max_ft_epochs = check_int("max_ft_epochs", max_ft_epochs, low=0)
    patience = check_int("patience", patience, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    target = label_source(model, labels)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)

    def loss(m, x, y):
        return F.cross_entropy(m(x), target(x, y))

    def sgd(decay):
        return torch.optim.SGD(attacked.parameters(), lr=lr, momentum=0.9, nesterov=True,
                               weight_decay=decay)

    train_epochs(attacked, batches, reg_epochs, sgd(l2_decay), loss)
    best, best_state, waited, ran = _mean_loss(attacked, batches, loss), None, 0, 0
    optimizer = sgd(0.0)
    while ran < max_ft_epochs and waited < patience:
        train_epochs(attacked, batches, 1, optimizer, loss)
        ran += 1
        now = _mean_loss(attacked, batches, loss)
        if now < best:
            best, waited = now, 0
            best_state = {k: v.clone() for k, v in attacked.state_dict().items()}
        else:
            waited += 1
    if best_state is not None:
        attacked.load_state_dict(best_state)
    return info(attacked, l2_decay=l2_decay, reg_epochs=reg_epochs, ft_epochs=ran,
                max_ft_epochs=max_ft_epochs, patience=patience, lr=lr, labels=labels,
                attacker_samples=batches.size)


@torch.no_grad()
def _mean_loss(model: nn.Module, batches: Batches, loss) -> float:
    device, total, count = device_of(model), 0.0, 0
    model.eval()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        total += float(loss(model, x, y)) * len(x)
        count += len(x)
    return total / count
