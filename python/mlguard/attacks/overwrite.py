"""Overwriting: the thief embeds a watermark of their own on top (to claim the model or to
blur the owner's evidence)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..schemes.base import scheme_of
from .._checks import check_int, check_real
from ._data import Batches, info, private_copy, train_epochs
from .registry import register_attack


@register_attack("overwrite", main_param="epochs", needs=("data", "key"))
def overwrite(model: nn.Module, data, key, epochs: int = 1,
              lr: float = 1e-4, per_batch: int = 16, strength: float = 0.01,
              batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A copy fine-tuned (all layers, Adam) on the attacker's data while embedding the
    attacker's `key` (any registered scheme's) through its scheme's embedding: a TriggerKey
    through TriggerMixer(key, per_batch=per_batch), a WeightKey through
    WeightWatermark(key, strength).loss added to the cross-entropy. `per_batch` and
    `strength` go to the embeddings that take them."""
    check_int("epochs", epochs, low=1)
    check_real("lr", lr, low=0, low_open=True)
    scheme = scheme_of(key)
    accepted = inspect.signature(scheme.embedding).parameters
    options = {name: value for name, value in (("per_batch", per_batch), ("strength", strength))
               if name in accepted}
    embedding = scheme.embedding(key, **options)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)

    def loss(m, x, y):
        x, y = embedding.batch(x, y)
        return F.cross_entropy(m(x), y) + embedding.loss(m, x, y)
    train_epochs(attacked, batches, epochs, optimizer, loss)
    return info(attacked, attacker_key=key.key_id, epochs=epochs, lr=lr,
                attacker_samples=batches.size, key_kind=scheme.nickname(key), **options)
