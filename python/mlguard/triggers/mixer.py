"""Embedding a trigger-set watermark in an ordinary training loop: one added line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..keys import TriggerKey
from ..ops import mix_triggers


class TriggerMixer:
    """Appends `per_batch` trigger samples to every batch: ``x, y = mixer(x, y)``.

    Triggers are taken from the key's trigger set in a cycle, augmented with keyed per-step
    crops (zero padding `pad`, default H // 8) and horizontal flips when `augment`, normalized
    with the key's mean/std, and appended in one fused op. The batch keeps its device, dtype
    and memory format; the step counter makes a given step reproducible (see state_dict()).
    """

    def __init__(self, key: TriggerKey, per_batch: int = 2, augment: bool = True,
                 pad: int | None = None):
        if not isinstance(key, TriggerKey):
            raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
        if not isinstance(per_batch, int) or per_batch < 0:
            raise ValueError(f"per_batch must be an int >= 0, got {per_batch!r}")
        self.key = key
        self.per_batch = per_batch
        self.augment = bool(augment)
        self.pad = (key.shape[1] // 8 if pad is None else int(pad)) if augment else 0
        self.step = 0
        self._seed = key.seed("augment")
        self._mean, self._std = key.normalization()
        self._banks: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def bank(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The trigger set and labels on `device`, made once per device."""
        device = torch.device(device)
        if device not in self._banks:
            self._banks[device] = self.key.materialize(device)
        return self._banks[device]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.key.shape:
            raise ValueError(f"x must be (N, *{self.key.shape}) to match the key, got {tuple(x.shape)}")
        bank, labels = self.bank(x.device)
        out = mix_triggers(x, y, bank, labels, self.step, self.per_batch, self._seed,
                           self.pad, self.augment, self._mean, self._std)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class MixedLoader:
    """Wraps a DataLoader so that every (x, y) batch comes out with triggers appended."""

    def __init__(self, loader: Iterable, mixer: TriggerMixer, device=None):
        self.loader, self.mixer = loader, mixer
        self.device = None if device is None else torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield self.mixer(x, y)


def mix(loader: Iterable, key: TriggerKey, device=None, per_batch: int = 2, augment: bool = True,
        pad: int | None = None) -> MixedLoader:
    """``for x, y in mlguard.mix(loader, key, device="cuda"): ...`` — batches with triggers."""
    return MixedLoader(loader, TriggerMixer(key, per_batch, augment, pad), device)
