"""Fine-tune mode: embed a trigger-set watermark in a model that is already trained."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..keys import TriggerKey
from ..verification.verdict import Verdict
from ..verification.verify import model_device, verify
from .mixer import TriggerMixer


def embed(model: torch.nn.Module, key: TriggerKey, loader: Iterable, epochs: int,
          optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None,
          per_batch: int = 2, augment: bool = True, alpha: float = 1e-6) -> Verdict:
    """Trains `model` for `epochs` on `loader` with triggers mixed into every batch.

    This is the "PreTrained" mode of Adi et al.: the original task keeps training while the
    triggers are learned. Returns the verdict for the watermarked model. (Training from
    scratch is the same mixer in the user's own loop.)
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    mixer = TriggerMixer(key, per_batch=per_batch, augment=augment)
    device = model_device(model)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = mixer(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
    return verify(model, key, alpha=alpha)
