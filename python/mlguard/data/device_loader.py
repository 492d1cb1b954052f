"""Training batches from a uint8 image tensor that lives on the training device.

Per epoch it shuffles, random-crops with zero padding and flips every image, normalizes,
and appends triggers, all on the device, with no worker processes: the offsets and flips of
an epoch are drawn at once, and each batch is one pass of mlguard::augment_batch (gather,
crop, flip, normalize, cast, channels-last) plus the trigger mixer's one pass. The same code
is the fast path on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

from ..ops import augment_batch
from .image_cache import ImageSet


class DeviceLoader:
    """``for x, y in DeviceLoader(images, labels, 512, device="cuda", mean=..., std=...)``.

    `images`: uint8 (N, C, H, W) (or an ImageSet, whose labels are then used); kept on
    `device` (default: where `images` are). Augmentation (`augment=True`): a random crop of
    the image zero-padded by `pad` pixels (default H // 8, torchvision's RandomCrop(padding=)
    convention) and a horizontal flip with probability 1/2, drawn per image per epoch.
    `triggers`: a callable ``(x, y) -> (x, y)`` applied to every batch, e.g. an
    mlguard.TriggerMixer, which appends the key's triggers. `seed` and the epoch fix the
    order and the augmentation; under torch.distributed (or with `rank`/`world_size`) each
    rank takes its own share of the same permutation.
    """

    def __init__(self, images: torch.Tensor | ImageSet, labels: torch.Tensor | None = None,
                 batch_size: int = 512, *, device=None, shuffle: bool = True,
                 augment: bool = True, pad: int | None = None, mean=None, std=None,
                 dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 drop_last: bool = False, triggers: Callable | None = None, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        if isinstance(images, ImageSet):
            images, labels = images.images, images.labels if labels is None else labels
        _check_inputs(images, labels, batch_size, dtype)
        self.device = torch.device(device) if device is not None else images.device
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.dtype, self.channels_last, self.triggers = dtype, channels_last, triggers
        self.seed, self.epoch = int(seed), 0
        n, c, h, w = images.shape
        self.shape = (c, h, w)
        self.pad = (h // 8 if pad is None else int(pad)) if augment else 0
        self.flip = bool(augment)
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad!r}")
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.mean, self.std = _normalization(mean, std, c)
        self._images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        self._labels = labels.to(self.device, torch.int64)

    def __len__(self) -> int:
        n = self._share()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flip = self._draw(self.epoch)
        self.epoch += 1
        for start in range(0, order.numel(), self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and idx.numel() < self.batch_size:
                return
            s = slice(start, start + idx.numel())
            x, y = self._batch(idx, offsets[s], flip[s])
            yield self.triggers(x, y) if self.triggers is not None else (x, y)

    def _share(self) -> int:
        n = self._labels.numel()
        return len(range(self.rank, n, self.world_size))

    def _draw(self, epoch: int):
        """The epoch's order, crop offsets and flips, drawn on the CPU (the same on every
        device) and moved to the device once."""
        n = self._labels.numel()
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (1 << 63))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size]
        m = order.numel()
        offsets = torch.randint(0, 2 * self.pad + 1, (m, 2), generator=g)
        flip = (torch.randint(0, 2, (m,), generator=g).bool() if self.flip
                else torch.zeros(m, dtype=torch.bool))
        return order.to(self.device), offsets.to(self.device), flip.to(self.device)

    def _batch(self, idx, offsets, flip) -> tuple[torch.Tensor, torch.Tensor]:
        x = augment_batch(self._images, idx, offsets, flip, self.pad, self.mean, self.std,
                          self.dtype)
        return (x if self.channels_last else x.contiguous()), self._labels[idx]


def _check_inputs(images, labels, batch_size, dtype) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
               else type(images).__name__)
        raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {got}")
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W), channels first; {tuple(images.shape)} "
                         "looks channels-last: use images.permute(0, 3, 1, 2)")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],) or \
            labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got "
                         f"{labels.dtype if isinstance(labels, torch.Tensor) else labels!r} "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")


def _normalization(mean, std, channels: int) -> tuple[list[float], list[float]]:
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std go together: got mean={mean!r}, std={std!r}")
    mean = [0.0] * channels if mean is None else [float(m) for m in mean]
    std = [1.0] * channels if std is None else [float(s) for s in std]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(f"mean and std need {channels} values each (std > 0), got "
                         f"mean={mean}, std={std}")
    return mean, std


def _rank_and_world(rank, world_size) -> tuple[int, int]:
    if rank is None and world_size is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    rank, world_size = int(rank or 0), int(world_size or 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, "
                         f"world_size={world_size}")
    return rank, world_size
