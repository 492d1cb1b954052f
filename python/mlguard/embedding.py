"""embed(): fine-tune a trained model until it carries a key of any registered scheme.

``mlguard.embed(model, key, loader, epochs, optimizer)`` asks the key's scheme
(``Scheme.embed``). The default (``train_embedding``) is the scheme's ``embedding()`` in a
plain loop: every batch goes through ``Embedding.batch`` and the loss gets
``Embedding.loss``; after each epoch the model is verified, and training stops once the key
is detected at `alpha` with at least `min_retention` of its trials matching (a margin that
later fine-tuning can eat into). Trigger-set keys keep their own loop (triggers/embed.py:
the same stopping rule with the retention of mlguard.retention, and advice on per_batch).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable

import torch

from ._checks import check_int
from .schemes.base import scheme_of
from .triggers.embed import EMBED_MIN_RETENTION
from .triggers.mixer import DEFAULT_PER_BATCH
from .verification.verdict import Verdict


def embed(model: torch.nn.Module, key, loader: Iterable, epochs: int,
          optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None,
          per_batch: int = DEFAULT_PER_BATCH, augment: bool = True, alpha: float = 1e-6, *,
          min_retention: float = EMBED_MIN_RETENTION, rank: int | None = None,
          world_size: int | None = None, **options) -> Verdict:
    """Trains `model` on `loader` while embedding `key` (any registered scheme's) until the
    key is detected at `alpha` with retention >= `min_retention`, for at most `epochs`
    epochs; returns the verdict, and warns (UserWarning) when it ends undetected or below
    `min_retention`. Batches are (x, y, *rest); rest is ignored.

    Trigger keys: exactly mlguard.triggers.embed (`per_batch`, `augment`, `rank` /
    `world_size` as for TriggerMixer). Other schemes: `per_batch`, `augment`, `rank`,
    `world_size` go to the scheme's embedding() when it takes them, as do `options` (e.g.
    `strength=` for weight keys); an option it does not take raises TypeError."""
    scheme = scheme_of(key)
    return scheme.embed(model, key, loader, epochs, optimizer, loss_fn, alpha=alpha,
                        min_retention=min_retention, per_batch=per_batch, augment=augment,
                        rank=rank, world_size=world_size, **options)


def train_embedding(scheme, model: torch.nn.Module, key, loader: Iterable, epochs: int,
                    optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None, *,
                    alpha: float = 1e-6, min_retention: float = EMBED_MIN_RETENTION,
                    **options) -> Verdict:
    """Scheme.embed's default: scheme.embedding(key, **options) in a plain training loop
    (see the module docstring). Options the embedding does not take are dropped when they
    are embed()'s trigger-set defaults (per_batch, augment, rank, world_size) and refused
    otherwise."""
    from .verification.verify import model_device, verify  # verify imports the schemes' base

    epochs = check_int("epochs", epochs, low=1)
    if isinstance(min_retention, bool) or not isinstance(min_retention, int | float) \
            or not 0 <= min_retention <= 1:
        raise ValueError(f"min_retention must be a number in [0, 1], got {min_retention!r}")
    accepted = inspect.signature(scheme.embedding).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for name in ("per_batch", "augment", "rank", "world_size"):
        if name in options and name not in accepted and not takes_any:
            options.pop(name)  # embed()'s own defaults, for trigger keys
    embedding = scheme.embedding(key, **options)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    device = model_device(model)
    verdict, epoch = None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in loader:
            if isinstance(batch, torch.Tensor) or not isinstance(batch, tuple | list) \
                    or len(batch) < 2:
                raise TypeError(f"batches must be (x, y, ...) sequences, got "
                                f"{type(batch).__name__}")
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            x, y = embedding.batch(x, y)
            optimizer.zero_grad(set_to_none=True)
            (loss_fn(model(x), y) + embedding.loss(model, x, y)).backward()
            optimizer.step()
        verdict = verify(model, key, alpha=alpha)
        if verdict.detected and verdict.matches >= min_retention * verdict.total:
            return verdict
    found = f"{verdict.matches}/{verdict.total} of the key's trials match"
    if not verdict.detected:
        warnings.warn(f"embed: the {scheme.name} key was not detected after {epoch} epochs at "
                      f"alpha {alpha:g}: {found}; train more epochs (epochs={epochs} is the "
                      "maximum) or strengthen the embedding", UserWarning, stacklevel=3)
    else:
        warnings.warn(f"embed: the {scheme.name} key is detected but with little margin after "
                      f"{epoch} epochs: {found}, below min_retention={min_retention:g}",
                      UserWarning, stacklevel=3)
    return verdict
