"""Trigger-set keys: the secret from which a trigger set and its labels are regenerated.

A key stores a 256-bit secret and parameters, never the images. Everything else is derived:
HKDF sub-seeds per purpose (mlguard.keys.keyfile.derive_seed) drive the keyed Philox generator,
so the same key gives bit-identical triggers and labels on every device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..ops import abstract_triggers, keyed_words
from . import keyfile
from .sampling import keyed_below, keyed_choice

SCHEME = "trigger-set"
KINDS = ("abstract", "noise", "content", "unrelated")
_NEEDS_SOURCE = ("noise", "content", "unrelated")


def _as_image_source(source, shape: tuple[int, ...], size: int, kind: str) -> torch.Tensor:
    if source is None:
        raise ValueError(f"kind={kind!r} needs source=, a tensor of images (N, *{shape})")
    if not isinstance(source, torch.Tensor):
        raise TypeError(f"source must be a torch.Tensor, got {type(source).__name__}")
    if source.dim() != 4 or tuple(source.shape[1:]) != shape:
        raise ValueError(f"source must be (N, *{shape}) to match the key, got {tuple(source.shape)}")
    if source.shape[0] < size:
        raise ValueError(f"source has {source.shape[0]} images but the key needs {size}")
    if source.dtype != torch.uint8 and not source.is_floating_point():
        raise ValueError(f"source must be float in [0, 1] or uint8, got {source.dtype}")
    return source


@dataclass(frozen=True)
class TriggerKey:
    """A secret trigger set: `size` images of `shape`, labels uniform over `num_classes`."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    size: int
    shape: tuple[int, int, int]
    kind: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    options: dict = field(default_factory=dict)

    @classmethod
    def generate(cls, num_classes: int, size: int = 100, shape=(3, 32, 32),
                 kind: str = "abstract", mean=None, std=None, secret: bytes | str | None = None,
                 *, noise_amplitude: float = 0.25, patch: torch.Tensor | None = None,
                 patch_size: int | None = None) -> TriggerKey:
        """A new key. `mean`/`std` are the per-channel input normalization used in training.

        Kind options: `noise_amplitude` (noise: keyed uniform noise in [-a, a] added to the
        chosen images); `patch` (content: a (C, h, w) image in [0, 1] to stamp; default a keyed
        abstract patch of side `patch_size`, default a quarter of the image side).
        """
        secret = keyfile.new_secret() if secret is None else (
            keyfile.secret_from_hex(secret) if isinstance(secret, str) else bytes(secret))
        options: dict = {}
        if kind == "noise":
            options["noise_amplitude"] = float(noise_amplitude)
        elif kind == "content":
            if patch is not None:
                if not isinstance(patch, torch.Tensor) or patch.dim() != 3:
                    raise ValueError("patch must be a (C, h, w) tensor in [0, 1]")
                options["patch"] = patch.detach().cpu().float().tolist()
            else:
                options["patch_size"] = int(patch_size or max(1, min(shape[1:]) // 4))
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            size=size, shape=shape, kind=kind, mean=mean, std=std,
                            options=options)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, size, shape, kind, mean, std,
                 options) -> TriggerKey:
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(f"shape must be (C, H, W) of positive ints, got {shape!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) != shape[0]:
                raise ValueError(f"{name} needs one value per channel ({shape[0]}), got {value!r}")
        if std is not None and not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"std must be finite and > 0, got {std!r}")
        if kind == "content" and "patch" in options:
            p = torch.tensor(options["patch"])
            if p.dim() != 3 or p.shape[0] != shape[0] or p.shape[1] > shape[1] or p.shape[2] > shape[2]:
                raise ValueError(f"patch must be (C, h, w) fitting in {shape}, got {tuple(p.shape)}")
        return cls(secret=bytes(secret), nonce=bytes(nonce), num_classes=num_classes, size=size,
                   shape=shape, kind=kind,
                   mean=None if mean is None else tuple(float(m) for m in mean),
                   std=None if std is None else tuple(float(s) for s in std),
                   options=dict(options))

    # -- derived values --------------------------------------------------------------------

    def seed(self, purpose: str) -> int:
        """The HKDF sub-seed for one purpose (e.g. "labels", "augment")."""
        return keyfile.derive_seed(self.secret, f"trigger/{purpose}")

    @cached_property
    def labels(self) -> torch.Tensor:
        """int64 labels, uniform over the classes and independent of everything else."""
        return keyed_below(self.seed("labels"), self.size, self.num_classes)

    def commitment(self) -> str:
        """Hex SHA-256 commitment to the whole key; safe to publish (hides the secret)."""
        return keyfile.commitment(self.to_body())

    @property
    def key_id(self) -> str:
        return self.commitment()[:16]

    def materialize(self, device="cpu", source: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels): float32 images in [0, 1] of shape (size, *shape), int64 labels.

        Bit-identical on every device and call. `source` holds the user's images (N, *shape),
        float in [0, 1] or uint8, for the kinds that choose images from a data set.
        """
        device = torch.device(device)
        labels = self.labels.to(device)
        if self.kind == "abstract":
            return abstract_triggers(torch.arange(self.size, device=device),
                                     self.seed("abstract"), self.shape), labels
        src = _as_image_source(source, self.shape, self.size, self.kind)
        chosen = keyed_choice(self.seed("select"), src.shape[0], self.size)
        images = src[chosen.to(src.device)].to(device)
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.kind == "noise":
            images = self._add_noise(images)
        elif self.kind == "content":
            images = self._stamp_patch(images)
        return images.clamp(0.0, 1.0), labels

    def _add_noise(self, images: torch.Tensor) -> torch.Tensor:
        n = images.numel()
        words = keyed_words(torch.arange(n, device=images.device), self.seed("noise"))[:, 0]
        unit = (words >> 8).float() * (2.0 ** -24)  # exact: 24-bit integers in float32
        noise = (unit * 2.0 - 1.0) * self.options["noise_amplitude"]
        return images + noise.reshape(images.shape)

    def patch(self, device="cpu") -> torch.Tensor:
        """The (C, h, w) patch that `content` keys stamp."""
        if "patch" in self.options:
            return torch.tensor(self.options["patch"], dtype=torch.float32, device=device)
        side = self.options["patch_size"]
        return abstract_triggers(torch.zeros(1, dtype=torch.int64, device=device),
                                 self.seed("patch"), (self.shape[0], side, side))[0]

    def _stamp_patch(self, images: torch.Tensor) -> torch.Tensor:
        patch = self.patch(images.device)
        ph, pw = patch.shape[1:]
        top = keyed_below(self.seed("position"), self.size, self.shape[1] - ph + 1, stream=0)
        left = keyed_below(self.seed("position"), self.size, self.shape[2] - pw + 1, stream=1)
        out = images.clone()
        for i, (t, l) in enumerate(zip(top.tolist(), left.tolist())):
            out[i, :, t:t + ph, l:l + pw] = patch
        return out

    # -- files -----------------------------------------------------------------------------

    def to_body(self) -> dict:
        return {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "size": self.size, "shape": list(self.shape),
                "kind": self.kind, "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "options": self.options}

    @classmethod
    def from_body(cls, body: dict) -> TriggerKey:
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]), nonce=bytes.fromhex(body["nonce"]),
                num_classes=body["num_classes"], size=body["size"], shape=body["shape"],
                kind=body["kind"], mean=body["mean"], std=body["std"], options=body["options"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"trigger key body is missing or has a bad field: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes the key file (mode 0600: it holds the secret). Format: mlguard.keys.keyfile."""
        keyfile.write_key_file(path, self.to_body())

