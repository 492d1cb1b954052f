"""Overwriting: the thief embeds a watermark of their own on top (to claim the model or to
blur the owner's evidence)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..schemes.base import scheme_of
from .._checks import check_int, check_real
from ._data import Batches, first_samples, info, private_copy, train_epochs
from .registry import register_attack


@register_attack("overwrite", main_param="epochs", needs=("data", "key"))
def overwrite(model: nn.Module, data, key, epochs: int = 1,
              lr: float = 1e-4, per_batch: int = 16, strength: float = 0.01,
              key_samples: int = 5000, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A copy fine-tuned (all layers, Adam) on the attacker's data while embedding the
    attacker's `key` (any registered scheme's) through its scheme's embedding: a TriggerKey
    through TriggerMixer(key, per_batch=per_batch), a WeightKey through
    WeightWatermark(key, strength).loss added to the cross-entropy. `per_batch` and
    `strength` go to the embeddings that take them, the attacker's images (the first
    `key_samples`, in [0, 1]) to those that take `images=` (EWE).

    `key` may also be a function `key(model=, data=)` making the thief's key from the
    stolen model and the attacker's first `key_samples` (x, y) samples (evaluate supplies
    one: frontier stitching, blackmarks and EWE keys are made from a model and data)."""
    check_int("epochs", epochs, low=1)
    check_real("lr", lr, low=0, low_open=True)
    key_samples = check_int("key_samples", key_samples, low=1)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    sample = None
    if not _is_key(key):
        if not callable(key):
            raise TypeError(f"key must be a key of a registered scheme or a function "
                            f"key(model=, data=) returning one, got {type(key).__name__}")
        sample = first_samples(batches, key_samples, lambda _x, y: y, torch.device("cpu"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            key = key(model=attacked, data=sample)
        attacked.eval()
        if not _is_key(key):
            raise TypeError(f"the key function returned a {type(key).__name__}, not a key")
    scheme = scheme_of(key)
    accepted = inspect.signature(scheme.embedding).parameters
    options = {name: value for name, value in (("per_batch", per_batch), ("strength", strength))
               if name in accepted}
    if "images" in accepted:
        if sample is None:
            sample = first_samples(batches, key_samples, lambda _x, y: y, torch.device("cpu"))
        options["images"], options["labels"] = _pixels(sample[0], scheme, key), sample[1]
    embedding = scheme.embedding(key, **options)
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)

    def loss(m, x, y):
        x, y = embedding.batch(x, y)
        return F.cross_entropy(m(x), y) + embedding.loss(m, x, y)
    train_epochs(attacked, batches, epochs, optimizer, loss)
    recorded = {k: v for k, v in options.items() if k in ("per_batch", "strength")}
    return info(attacked, attacker_key=key.key_id, epochs=epochs, lr=lr,
                attacker_samples=batches.size, key_kind=scheme.nickname(key), **recorded)


def _is_key(value) -> bool:
    try:
        scheme_of(value)
    except TypeError:
        return False
    return True


def _pixels(x: torch.Tensor, scheme, key) -> torch.Tensor:
    """The attacker's model inputs back in [0, 1], under the key's normalization."""
    norm = scheme.input_normalization(key)
    if norm is None or norm[0] is None:
        return x.clamp(0, 1)
    m = torch.tensor(norm[0], dtype=torch.float32)[:, None, None]
    s = torch.tensor(norm[1], dtype=torch.float32)[:, None, None]
    return (x.float() * s + m).clamp(0, 1)
