"""Fine-tuning attacks (Adi et al. 2018, "Turning your weakness into a strength"):

FTLL  train the last layer only
FTAL  train all layers
RTLL  re-initialize the last layer, train it only
RTAL  re-initialize the last layer, train all layers
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import Batches, info, last_linear, private_copy, train_epochs
from .registry import register_attack

MODES = ("FTLL", "FTAL", "RTLL", "RTAL")
"""fine_tune's modes (Adi et al. 2018, Sec. 5): FT fine-tunes, RT first re-initializes the last
layer; LL trains the last layer only, AL all layers."""
# Adam; a re-initialized head starts from nothing and gets the usual training rate, a kept
# one the smaller rate of fine-tuning (the toolbox's and Adi et al.'s practice).
DEFAULT_LR = {"FTLL": 1e-4, "FTAL": 1e-4, "RTLL": 1e-3, "RTAL": 1e-3}


@register_attack("ftll", main_param="epochs", needs=("data",), fixed={"mode": "FTLL"})
@register_attack("ftal", main_param="epochs", needs=("data",), fixed={"mode": "FTAL"})
@register_attack("rtll", main_param="epochs", needs=("data",), fixed={"mode": "RTLL"})
@register_attack("rtal", main_param="epochs", needs=("data",), fixed={"mode": "RTAL"})
@register_attack("fine_tune", main_param="mode", needs=("data",),
                 aliases=("fine-tune", "finetune"))
def fine_tune(model: nn.Module, data, mode: str = "FTAL", epochs: int = 1,
              lr: float | None = None, last_layer: str | None = None, batch_size: int = 128,
              seed: int = 0) -> nn.Module:
    """A fine-tuned copy of `model` on the attacker's `data` (cross-entropy, Adam).

    `last_layer` names the head; by default the last nn.Linear. RT* modes re-initialize it
    with its own reset_parameters() under `seed`.
    """
    if not isinstance(mode, str) or mode.upper() not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mode = mode.upper()
    check_int("epochs", epochs, low=1)
    lr = DEFAULT_LR[mode] if lr is None else lr
    check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    name, head = last_linear(attacked, last_layer)
    if mode.startswith("RT"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head.reset_parameters()
    params = head.parameters() if mode.endswith("LL") else attacked.parameters()
    optimizer = torch.optim.Adam(params, lr=lr)
    if mode.endswith("LL"):
        for p in attacked.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    train_epochs(attacked, batches, epochs, optimizer,
                 lambda m, x, y: F.cross_entropy(m(x), y))
    for p, original in zip(attacked.parameters(), model.parameters()):
        p.requires_grad_(original.requires_grad)
    return info(attacked, mode=mode, last_layer=name, epochs=epochs, lr=lr,
                attacker_samples=batches.size)
