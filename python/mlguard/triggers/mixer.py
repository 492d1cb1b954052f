"""Embedding a trigger-set watermark in an ordinary training loop: one added line."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from .._checks import check_int
from ..keys import TriggerKey
from ..ops import mix_triggers

# Triggers appended to every batch unless told otherwise, picked from the measurements in
# benchmarks/RESULTS.md (bench_retention.py): 2 left the README's 5,000-image CIFAR-10 subset
# near chance for 6 epochs; 16 watermarks the README Quick start in its 4 epochs (84-88%).
DEFAULT_PER_BATCH = 16


def _int_or_none(value) -> int | None:
    """`value` as a Python int if it is an integer (numpy and torch ones too), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class TriggerMixer:
    """Appends `per_batch` trigger samples to every batch: ``x, y = mixer(x, y)``.

    Triggers are taken from the key's trigger set in a cycle, augmented with keyed per-step
    crops (zero padding `pad`, default H // 8) and horizontal flips when `augment`, normalized
    with the key's mean/std, and appended in one fused op. The batch keeps its device, dtype
    and memory format; integer labels come back as int64. The step counter makes a given step
    reproducible (see state_dict()).

    Distributed training: rank r of W ranks takes draws (step * W + r) * per_batch + j, so
    in every step the ranks together take W * per_batch consecutive, distinct draws of the
    cycle (each draw also has its own augmentation). Rank and world size come from the
    default torch.distributed process group when it is initialized at the time of the call,
    or from `rank=` and `world_size=` (given together; they win). Resuming from state_dict()
    with the same world size reproduces every step exactly.

    Pattern-mode keys (key.mode == "pattern", a pattern -> class backdoor): draw d stamps
    the batch's image d % N (N = batch size) with pattern d % K and labels it with that
    pattern's target class. The batch is un-normalized with the key's mean/std, stamped in
    pixel space (patch replaces its region; noise adds and clamps to [0, 1]) and normalized
    again, in float32 elementwise ops (same bits on CPU and CUDA); `augment` does not apply
    (the carriers are the user's own, varied images).
    """

    def __init__(self, key: TriggerKey, per_batch: int = DEFAULT_PER_BATCH, augment: bool = True,
                 pad: int | None = None, *,
                 rank: int | None = None, world_size: int | None = None):
        if not isinstance(key, TriggerKey):
            raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
        per_batch = check_int("per_batch", per_batch, low=0)
        if key.mode != "pattern" and per_batch > key.size:
            raise ValueError(f"per_batch={per_batch} is larger than the key's {key.size} "
                             f"triggers: a batch would hold the same trigger twice; use "
                             f"per_batch <= {key.size} or a key with more triggers")
        if (rank is None) != (world_size is None):
            raise ValueError(f"rank and world_size must be given together, got rank={rank!r}, "
                             f"world_size={world_size!r}")
        if world_size is not None:
            world_size = check_int("world_size", world_size, low=1)
            number = _int_or_none(rank)
            if number is None or not 0 <= number < world_size:
                raise ValueError(f"rank must be an int in [0, world_size={world_size}), "
                                 f"got {rank!r}")
            rank = number
        self.key = key
        self.per_batch = per_batch
        self.augment = bool(augment)
        self.pad = (key.shape[1] // 8 if pad is None else check_int("pad", pad, low=0)) if augment else 0
        self.rank, self.world_size = rank, world_size
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

    def placement(self) -> tuple[int, int]:
        """(rank, world_size) this mixer draws for: explicit, the process group's, or (0, 1)."""
        if self.world_size is not None:
            return self.rank, self.world_size  # type: ignore[return-value]
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.key.shape:
            raise ValueError(f"x must be (N, *{self.key.shape}) to match the key, got {tuple(x.shape)}")
        if y.dtype != torch.int64:
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
            y = y.long()
        rank, world = self.placement()
        if self.key.mode == "pattern":
            out = self._stamp_batch(x, y, self.step * world + rank)
            self.step += 1
            return out
        bank, labels = self.bank(x.device)
        # The kernel's draw index is step * per_batch + j; a virtual step of step * W + r
        # gives rank r the r-th of W consecutive slices of the cycle in this step.
        out = mix_triggers(x, y, bank, labels, self.step * world + rank, self.per_batch,
                           self._seed, self.pad, self.augment, self._mean, self._std)
        self.step += 1
        return out

    def _stamp_batch(self, x: torch.Tensor, y: torch.Tensor,
                     virtual_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] < 1:
            raise ValueError("x is an empty batch: pattern-mode keys stamp the batch's own "
                             "images, so a batch needs at least one")
        draws = virtual_step * self.per_batch + torch.arange(self.per_batch, device=x.device)
        which = draws % self.key.patterns
        carriers = x.detach()[draws % x.shape[0]].float()
        mean = torch.tensor(self._mean, dtype=torch.float32, device=x.device)[:, None, None]
        std = torch.tensor(self._std, dtype=torch.float32, device=x.device)[:, None, None]
        stamped = self.key.normalize(self.key.stamp(carriers * std + mean, which)).to(x.dtype)
        labels = self.key.targets.to(x.device)[which]
        channels_last = x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last)
        out = torch.cat([x, stamped])
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, torch.cat([y, labels])

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = check_int("state['step']", state["step"], low=0)


class MixedLoader:
    """Wraps a DataLoader so that every (x, y, *rest) batch comes out with triggers appended
    to x and y; `rest` (indices, weights, ...) passes through unchanged and is not extended."""

    def __init__(self, loader: Iterable, mixer: TriggerMixer, device=None):
        self.loader, self.mixer = loader, mixer
        self.device = None if device is None else torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple]:
        for batch in self.loader:
            x, y, rest = split_batch(batch)
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield (*self.mixer(x, y), *rest)


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(x, y, rest) of a loader batch (x, y, *rest)."""
    if isinstance(batch, torch.Tensor) or not isinstance(batch, tuple | list) or len(batch) < 2:
        raise TypeError(f"batches must be (x, y, ...) sequences, got {type(batch).__name__}")
    return batch[0], batch[1], tuple(batch[2:])


def mix(loader: Iterable, key: TriggerKey, device=None, per_batch: int = DEFAULT_PER_BATCH,
        augment: bool = True, pad: int | None = None, *,
        rank: int | None = None, world_size: int | None = None) -> MixedLoader:
    """``for x, y in mlguard.mix(loader, key, device="cuda"): ...`` — batches with triggers."""
    return MixedLoader(loader, TriggerMixer(key, per_batch, augment, pad, rank=rank,
                                            world_size=world_size), device)
