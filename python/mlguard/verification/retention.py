"""A cheap retention check for training loops: the fraction of a key's triggers that a model
answers with the key's label, with the triggers exactly as verify() builds them."""

from __future__ import annotations

import torch

from ..keys import TriggerKey
from .verify import pattern_votes, trigger_predictions


def retention(model: torch.nn.Module, key: TriggerKey, batch_size: int = 256) -> float:
    """matches / key.size, as `mlguard.verify(model, key).matches / total` would report it.

    Cheaper than verify (no state_dict hash, no verdict), so a training loop can log it every
    epoch. The triggers run exactly as in verify (trigger_predictions: the model's device
    and dtype, eval mode, no gradients); the model's mode is restored.

    Pattern-mode keys: the mean per-pattern success rate (the fraction of the key's carriers
    stamped with pattern k that the model answers with k's target, averaged over the K
    patterns): the "trigger accuracy" papers quote, and finer-grained than the vote count.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(key, TriggerKey):
        raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    preds, labels, _, _ = trigger_predictions(model, key, batch_size)
    if key.mode == "pattern":
        return float(pattern_votes(preds, key)[1].mean())
    return int((preds == labels).sum()) / key.size
