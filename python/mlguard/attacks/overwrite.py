"""Overwriting: the thief embeds a watermark of their own on top (to claim the model or to
blur the owner's evidence)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import TriggerKey, WeightKey
from ..triggers import TriggerMixer
from ..weights import WeightWatermark
from .._checks import check_int, check_real
from ._data import Batches, info, private_copy, train_epochs
from .registry import register_attack


@register_attack("overwrite", main_param="epochs", needs=("data", "key"))
def overwrite(model: nn.Module, data, key: TriggerKey | WeightKey, epochs: int = 1,
              lr: float = 1e-4, per_batch: int = 16, strength: float = 0.01,
              batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A copy fine-tuned (all layers, Adam) on the attacker's data while embedding the
    attacker's `key`: a TriggerKey through TriggerMixer(key, per_batch=per_batch), a WeightKey
    through WeightWatermark(key, strength).loss added to the cross-entropy."""
    check_int("epochs", epochs, low=1)
    check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
    if isinstance(key, TriggerKey):
        mixer = TriggerMixer(key, per_batch=per_batch)

        def loss(m, x, y):
            x, y = mixer(x, y)
            return F.cross_entropy(m(x), y)
        what = {"key_kind": key.kind, "per_batch": per_batch}
    elif isinstance(key, WeightKey):
        wm = WeightWatermark(key, strength)

        def loss(m, x, y):
            return F.cross_entropy(m(x), y) + wm.loss(m)
        what = {"key_kind": "weight", "strength": strength}
    else:
        raise TypeError(f"key must be the attacker's TriggerKey or WeightKey, got "
                        f"{type(key).__name__}")
    train_epochs(attacked, batches, epochs, optimizer, loss)
    return info(attacked, attacker_key=key.key_id, epochs=epochs, lr=lr,
                attacker_samples=batches.size, **what)
