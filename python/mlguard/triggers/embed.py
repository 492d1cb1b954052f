"""Fine-tune mode: embed a trigger-set watermark in a model that is already trained."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch

from .._checks import check_int
from ..keys import TriggerKey
from ..verification.retention import retention
from ..verification.verdict import Verdict
from ..verification.verify import model_device, verify
from .mixer import DEFAULT_PER_BATCH, TriggerMixer, split_batch

# embed() stops once the key is detected and the model answers at least this fraction of the
# triggers with the key's label: a margin over the bare detection threshold (28 of 100
# triggers at alpha 1e-6 with 10 classes) that later fine-tuning can eat into.
EMBED_MIN_RETENTION = 0.8
"""The retention embed stops at (with the key detected): a margin over the detection threshold."""


def embed(model: torch.nn.Module, key: TriggerKey, loader: Iterable, epochs: int,
          optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None,
          per_batch: int = DEFAULT_PER_BATCH, augment: bool = True, alpha: float = 1e-6, *,
          min_retention: float = EMBED_MIN_RETENTION, rank: int | None = None,
          world_size: int | None = None) -> Verdict:
    """Trains `model` on `loader` with triggers mixed into every batch until the key is
    detected at `alpha` with retention >= `min_retention`, for at most `epochs` epochs.

    This is the "PreTrained" mode of Adi et al.: the original task keeps training while the
    triggers are learned. Retention (mlguard.retention) is checked after every epoch. Returns
    the verdict for the watermarked model; warns (UserWarning) when it ends undetected or
    below `min_retention`, with the retention reached. Batches may be (x, y, *rest); rest is
    ignored. `rank`/`world_size` as for TriggerMixer. (Training from scratch is the same
    mixer in the user's own loop.)
    """
    epochs = check_int("epochs", epochs, low=1)
    if isinstance(min_retention, bool) or not isinstance(min_retention, int | float) \
            or not 0 <= min_retention <= 1:
        raise ValueError(f"min_retention must be a number in [0, 1], got {min_retention!r}")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    mixer = TriggerMixer(key, per_batch=per_batch, augment=augment, rank=rank,
                         world_size=world_size)
    device = model_device(model)
    verdict, reached, epoch = None, 0.0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in loader:
            x, y, _ = split_batch(batch)
            x, y = mixer(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        reached = retention(model, key)
        if reached >= min_retention:
            verdict = verify(model, key, alpha=alpha)
            if verdict.detected:
                return verdict
    verdict = verdict or verify(model, key, alpha=alpha)
    found = (f"retention {reached:.0%} ({verdict.matches}/{verdict.total} triggers answered "
             f"with the key's label)")
    fix = (f"train more epochs (epochs={epochs} is the maximum) or raise per_batch "
           f"(now {mixer.per_batch}; triggers seen per epoch = steps per epoch x per_batch)")
    if not verdict.detected:
        warnings.warn(f"embed: the key was not detected after {epoch} epochs at alpha "
                      f"{alpha:g}: {found}; {fix}", UserWarning, stacklevel=2)
    else:
        warnings.warn(f"embed: the key is detected but with little margin after {epoch} "
                      f"epochs: {found}, below min_retention={min_retention:g}; {fix}",
                      UserWarning, stacklevel=2)
    return verdict
