"""What a trigger kind is, and the registry of kinds by name.

A kind decides how a trigger key makes its images: from the secret alone (abstract), or
from images stored in the key, changed or not (noise, content, unrelated, custom), and
whether it also offers pattern mode (K keyed patterns, each -> its keyed class). TriggerKey
keeps what every kind shares (secret, labels, normalization, pattern bookkeeping, the key
file) and asks `KINDS[key.kind]` for the rest. Kinds are stateless: their methods take the
key.

To add a kind: one file in this folder with a TriggerKind subclass under @register_kind,
imported in kinds/__init__.py, and its test; add a case to tests/keys/test_golden_keys.py
so its files and commitments are pinned from then on (docs/contributing.md).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .. import images as key_images

KINDS: dict[str, type[TriggerKind]] = {}  # registration order: the order users see


def register_kind(cls: type[TriggerKind]) -> type[TriggerKind]:
    """Registers a TriggerKind subclass under its `name` (which goes into key files: never
    rename one)."""
    if not (isinstance(cls, type) and issubclass(cls, TriggerKind)):
        raise TypeError(f"register_kind takes a TriggerKind subclass, got {cls!r}")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}.name must be an identifier, got "
                         f"{getattr(cls, 'name', None)!r}")
    if cls.name in KINDS:
        raise ValueError(f"kind {cls.name!r} is already registered by "
                         f"{KINDS[cls.name].__name__}")
    KINDS[cls.name] = cls
    return cls


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def get_kind(name) -> type[TriggerKind]:
    """The kind registered as `name`; ValueError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f"kind must be one of {kind_names()}, got {name!r}")
    return KINDS[name]


def names_where(flag: str) -> tuple[str, ...]:
    """The kinds whose class attribute `flag` is true, e.g. names_where("pattern_mode")."""
    return tuple(name for name, kind in KINDS.items() if getattr(kind, flag))


class TriggerKind:
    """One kind of trigger set. Subclasses set `name` and the flags, and override what
    their images need; the defaults fit a kind that uses its stored images as they are."""

    name: ClassVar[str]
    stores_images: ClassVar[bool] = False  # chosen once (or given) and stored in the key
    pattern_mode: ClassVar[bool] = False  # offers mode="pattern" (and defaults to it)
    from_generate: ClassVar[bool] = True  # made by TriggerKey.generate (custom: from_images)
    user_labels: ClassVar[bool] = False  # may carry the user's labels instead of keyed ones

    @classmethod
    def generate_options(cls, *, shape: tuple[int, int, int], mode: str, patterns: int | None,
                         noise_amplitude: float, patch, patch_size: int | None) -> dict:
        """This kind's entries in the key's options, from generate()'s arguments (the
        arguments of other kinds are ignored, as they always were)."""
        return {}

    @classmethod
    def check_options(cls, options: dict, shape: tuple[int, int, int], mode: str) -> None:
        """Raises ValueError when this kind's options do not fit the key."""

    @classmethod
    def images(cls, key, device: torch.device) -> torch.Tensor:
        """Image mode: the triggers, float32 in [0, 1], (size, *shape), before
        normalization; the same bits on every device."""
        pixels = key_images.to_float(key._pixels.to(device))
        return cls.change(key, pixels).clamp(0.0, 1.0)

    @classmethod
    def change(cls, key, images: torch.Tensor) -> torch.Tensor:
        """What image mode does to the stored images (before clamping to [0, 1])."""
        return images

    @classmethod
    def pattern_planes(cls, key, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Pattern mode: (canvas, mask), (K, C, H, W) and a mask broadcast against it."""
        raise ValueError(f"kind {cls.name!r} has no pattern mode")

    @classmethod
    def stamp(cls, images: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor,
              which: torch.Tensor) -> torch.Tensor:
        """Pattern mode: float32 images in [0, 1] with pattern which[i] applied to each."""
        raise ValueError(f"kind {cls.name!r} has no pattern mode")

    @classmethod
    def patch(cls, key, device: torch.device) -> torch.Tensor:
        raise ValueError(f"patch() is for 'content' keys; this key's kind is {cls.name!r}")
