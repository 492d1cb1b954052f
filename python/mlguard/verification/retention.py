"""A cheap retention check for training loops: the fraction of a key's triggers that a model
answers with the key's label, with the triggers exactly as verify() builds them."""

from __future__ import annotations

import torch

from ..keys import TriggerKey
from .verify import model_device, normalize, predict


def retention(model: torch.nn.Module, key: TriggerKey, batch_size: int = 256) -> float:
    """matches / key.size, as `mlguard.verify(model, key).matches / total` would report it.

    Cheaper than verify (no state_dict hash, no verdict), so a training loop can log it every
    epoch. The triggers run on the model's device in eval mode without gradients through
    verify's own helpers (materialize, normalize, predict); the model's mode is restored.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(key, TriggerKey):
        raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    inputs, labels = key.materialize(model_device(model))
    was_training = model.training
    model.eval()
    try:
        preds = predict(model, normalize(inputs, key), key.num_classes, batch_size)
    finally:
        model.train(was_training)
    return int((preds == labels).sum()) / key.size
