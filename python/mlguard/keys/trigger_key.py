"""Trigger-set keys: the secret from which a trigger set and its labels are regenerated.

A key stores a 256-bit secret and parameters, plus the images for kinds chosen from data or
given by the user (keys.images). How each kind makes its images is its own class in
keys/kinds/ (one file each); this file holds what all kinds share. Everything else is derived:
HKDF sub-seeds per purpose (mlguard.keys.keyfile.derive_seed) drive the keyed Philox generator,
so the same key gives bit-identical triggers and labels on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .._checks import check_int
from . import images as key_images
from . import keyfile, user_labels
from .kinds import get_kind, kind_names, names_where
from .base import Key
from .sampling import keyed_below, keyed_choice

SCHEME = "trigger-set"
# Read from the kinds' registry (keys/kinds); kept as names for the callers that list them.
KINDS = kind_names()
STORES_IMAGES = names_where("stores_images")  # the rest come from the secret
MODES = ("image", "pattern")  # noise/content: per-image labels, or K keyed patterns -> classes
PATTERN_KINDS = names_where("pattern_mode")
DEFAULT_PATTERNS = 16


def _check_shape(shape) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                  and s >= 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) of positive ints, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if shape[2] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        raise ValueError(f"shape must be (C, H, W), channels first; {shape} looks like "
                         f"(H, W, C): use {(shape[2], shape[0], shape[1])}")
    return shape


def _check_normalization(mean, std, channels: int) -> tuple[tuple | None, tuple | None]:
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: give both (the per-channel normalization "
                         "used in training) or neither (inputs in [0, 1]); got "
                         f"mean={mean!r}, std={std!r}")
    if mean is None:
        return None, None
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
                or len(value) != channels:
            raise ValueError(f"{name} needs one value per channel ({channels}), got {value!r}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if not all(math.isfinite(m) for m in mean):
        raise ValueError(f"mean must be finite, got {mean!r}")
    if not all(s > 0 and math.isfinite(s) for s in std):
        raise ValueError(f"std must be finite and > 0, got {std!r}")
    return mean, std


@dataclass(frozen=True)
class TriggerKey(Key):
    """A secret trigger set: `size` images of `shape`, with labels over `num_classes`.

    Kinds: "abstract" images are regenerated from the secret (the key stays tiny); "noise",
    "content" and "unrelated" images are chosen from a data set once, at generate(), and
    "custom" images are the user's own (from_images): these keys store their images, so the
    key file alone regenerates the exact trigger set. Labels are drawn from the secret,
    uniform over the classes, unless the user gave them (from_images(labels=...)).
    """

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    size: int
    shape: tuple[int, int, int]
    kind: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    options: dict = field(default_factory=dict)
    stored_images: dict | None = field(default=None, repr=False)  # images.encode() form
    user_labels: tuple[int, ...] | None = field(default=None, repr=False)
    # Metadata, not key material: outside the body, so never part of the commitment or of
    # equality. `label` is a human name (e.g. a customer id) saved in the key file's MAC'd
    # metadata (keyfile, version 2); `path` is the file load_key read the key from.
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, num_classes: int, size: int = 100, shape=(3, 32, 32),
                 kind: str = "abstract", mean=None, std=None, secret: bytes | str | None = None,
                 *, source: torch.Tensor | None = None, noise_amplitude: float = 0.25,
                 patch=None, patch_size: int | None = None, mode: str | None = None,
                 patterns: int = DEFAULT_PATTERNS, label: str | None = None) -> TriggerKey:
        """A new key. `mean`/`std` are the per-channel input normalization used in training
        (both or neither).

        `source` (noise, content, unrelated): images (N, *shape), float in [0, 1] or uint8,
        from which `size` are chosen by the secret and stored in the key. Kind options:
        `noise_amplitude` (noise: keyed uniform noise in [-a, a] added to the chosen images);
        `patch` (content: a (C, h, w) image in [0, 1] to stamp; default a keyed abstract patch
        of side `patch_size`, default a quarter of the image side).

        `mode` (noise, content; default "pattern", measured in benchmarks/RESULTS.md):
        "image" gives every stored image its own keyed label (the model memorizes them);
        "pattern" makes `patterns` (K) keyed patterns, each with its
        own keyed target class: the published backdoor (pattern -> class), stamped on the
        user's own images in training and on carrier images (the stored ones) at verification,
        tested exactly with Binomial(K, 1/C) (docs/design.md). In pattern mode `patch` may be
        one (C, h, w) logo for all K patterns (at K keyed positions) or a list of K.

        `label`: a name for people (e.g. a customer id), saved in the key file and shown in
        scan reports; metadata, never part of the commitment (see `with_label`).
        """
        secret = keyfile.secret_or_new(secret)
        shape = _check_shape(shape)
        size = check_int("size", size, low=1)
        spec = get_kind(kind)
        options: dict = {}
        if mode is None:
            mode = "pattern" if spec.pattern_mode else "image"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if spec.pattern_mode:
            options["mode"] = mode
            if mode == "pattern":
                options["patterns"] = check_int("patterns", patterns, low=1)
        elif mode != "image":
            raise ValueError(f"mode={mode!r} is for kinds {PATTERN_KINDS}, got kind={kind!r} "
                             "('unrelated' keeps per-image keyed labels)")
        options.update(spec.generate_options(
            shape=shape, mode=mode, patterns=options.get("patterns"),
            noise_amplitude=noise_amplitude, patch=patch, patch_size=patch_size))
        stored = None
        if spec.stores_images:
            chosen = _choose(source, shape, size, kind, secret)
            stored = key_images.encode(chosen)
        elif source is not None:
            raise ValueError(f"kind={kind!r} makes its images from the secret; source= is "
                             f"only for {_listed(names_where('stores_images'), 'from_generate')}")
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            size=size, shape=shape, kind=kind, mean=mean, std=std,
                            options=options, stored_images=stored, label=label)

    @classmethod
    def from_images(cls, images, labels=None, *, num_classes: int, shape=(3, 32, 32),
                    resize: str = "center_crop", mean=None, std=None,
                    secret: bytes | str | None = None,
                    label: str | None = None) -> TriggerKey:
        """A key for your own trigger set (e.g. a published one), stored in the key.

        `images`: a uint8 or float ([0, 1]) tensor (N, C, H, W), a list of image files, or a
        folder (its files in sorted file-name order: 1.jpg, 10.jpg, 100.jpg, 11.jpg, ...).
        Files are decoded with Pillow by content; see mlguard.keys.images.read_images for
        `resize` ("center_crop", "resize" or "none"). `labels`: None draws secret labels,
        uniform over the classes (the exact binomial test); a sequence of ints or a text file
        with one number per line keeps yours in the images' order, and a dict or a .csv file
        of (file name, label) pairs each label with its file by name (images given as files).
        Verdicts then record the assumption that they were drawn uniformly at random and kept
        secret, and label sets implausible under it (all one class, or a chi-square test
        against uniform at p < 1e-3) are refused: see mlguard.keys.user_labels. Keys are
        checked when made, not when loaded.
        """
        shape = _check_shape(shape)
        if resize not in key_images.RESIZE_MODES:
            raise ValueError(f"resize must be one of {key_images.RESIZE_MODES}, got {resize!r}")
        paths = None
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != shape[0]:
                hint = (" (channels last? use images.permute(0, 3, 1, 2))"
                        if images.dim() == 4 and images.shape[3] == shape[0] else "")
                raise ValueError(f"images must be (N, {shape[0]}, H, W) to match shape {shape}, "
                                 f"got {tuple(images.shape)}{hint}")
            pixels = (key_images.as_stored(images, "images") if tuple(images.shape[1:]) == shape
                      else key_images.resize_tensor(images, shape, resize))
        else:
            paths = key_images.image_paths(images)
            pixels = key_images.read_images(paths, shape, resize)
        num_classes = check_int("num_classes", num_classes, low=2)
        given = None
        if labels is not None:
            if user_labels.is_mapping(labels):
                if paths is None:
                    raise ValueError("labels: a file-name -> label mapping needs images given "
                                     "as files or a folder, got a tensor")
                labels = user_labels.labels_by_name(labels, paths)
            given = tuple(key_images.read_labels(labels, pixels.shape[0], num_classes))
            user_labels.check_plausibly_uniform(given, num_classes)
        return cls._checked(secret=keyfile.secret_or_new(secret), nonce=keyfile.new_nonce(),
                            num_classes=num_classes, size=int(pixels.shape[0]), shape=shape,
                            kind="custom", mean=mean, std=std, options={},
                            stored_images=key_images.encode(pixels), user_labels=given,
                            label=label)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, size, shape, kind, mean, std,
                 options, stored_images=None, user_labels=None, label=None) -> TriggerKey:
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=2)
        size = check_int("size", size, low=1)
        shape = _check_shape(shape)
        spec = get_kind(kind)
        mean, std = _check_normalization(mean, std, shape[0])
        mode = options.get("mode", "image")  # keys made before pattern mode are per-image
        if mode not in MODES or (mode == "pattern" and not spec.pattern_mode):
            raise ValueError(f"mode must be one of {MODES} (pattern only for {PATTERN_KINDS}), "
                             f"got {mode!r} for kind {kind!r}")
        if mode == "pattern":
            check_int("patterns", options.get("patterns"), low=1)
        spec.check_options(options, shape, mode)
        if spec.stores_images:
            if stored_images is None:
                raise ValueError(
                    f"this {kind!r} key does not store its trigger images (it was made by an "
                    "mlguard before 0.2, whose keys needed the original `source` at every use "
                    "and could silently give chance-level matches): it cannot be verified "
                    "reliably; make a new key with TriggerKey.generate(..., source=...) or "
                    "TriggerKey.from_images(...)")
            decoded = key_images.decode(stored_images)  # checked once, kept by the key
            if tuple(decoded.shape) != (size, *shape):
                raise ValueError(f"stored images are {tuple(decoded.shape)}, the key needs "
                                 f"{(size, *shape)}")
        elif stored_images is not None:
            raise ValueError(f"kind {kind!r} does not store images")
        if user_labels is not None:
            if not spec.user_labels:
                raise ValueError(f"only {_listed(names_where('user_labels'))} keys "
                                 "(from_images) carry user-given labels")
            user_labels = tuple(key_images.read_labels(list(user_labels), size, num_classes))
        key = cls(secret=bytes(secret), nonce=bytes(nonce), num_classes=num_classes, size=size,
                   shape=shape, kind=kind, mean=mean, std=std, options=dict(options),
                   stored_images=stored_images, user_labels=user_labels,
                   label=keyfile.check_label(label))
        if stored_images is not None:
            key.__dict__["_pixels"] = decoded  # the cached_property, filled without decoding again
        return key

    # -- derived values --------------------------------------------------------------------

    def seed(self, purpose: str) -> int:
        """The HKDF sub-seed for one purpose (e.g. "labels", "augment")."""
        return keyfile.derive_seed(self.secret, f"trigger/{purpose}")

    @cached_property
    def labels(self) -> torch.Tensor:
        """int64 labels: the user's (from_images), or drawn from the secret, uniform over the
        classes and independent of everything else."""
        if self.user_labels is not None:
            return torch.tensor(self.user_labels, dtype=torch.int64)
        return keyed_below(self.seed("labels"), self.size, self.num_classes)

    @property
    def labels_given(self) -> bool:
        """True when the labels are the user's: the exact test then assumes that they were
        drawn uniformly at random and kept secret."""
        return self.user_labels is not None

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) that training and verification apply: the key's, or
        (0, 1) for a key without normalization. One definition for the mixer, verify, scan."""
        channels = self.shape[0]
        if self.mean is None:
            return [0.0] * channels, [1.0] * channels
        return list(self.mean), list(self.std)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the model sees them: (x - mean) / std in float32, the same
        arithmetic as the mixer's kernel."""
        mean, std = self.normalization()
        mean = torch.tensor(mean, dtype=torch.float32, device=images.device)[:, None, None]
        std = torch.tensor(std, dtype=torch.float32, device=images.device)[:, None, None]
        return (images.float() - mean) / std

    def materialize(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels): float32 images in [0, 1] of shape (size, *shape), int64 labels,
        before normalization. Bit-identical on every device and call; the key alone holds
        everything needed."""
        device = torch.device(device)
        if self.mode == "pattern":
            images = key_images.to_float(self._pixels.to(device))
            which = torch.arange(self.size, device=device) % self.patterns
            return self.stamp(images, which), self.targets.to(device)[which]
        return self.kind_class.images(self, device), self.labels.to(device)

    @property
    def kind_class(self):
        """The TriggerKind subclass of this key's kind (keys/kinds): how it makes images."""
        return get_kind(self.kind)

    # -- pattern mode (pattern -> class backdoors) ------------------------------------------

    @property
    def mode(self) -> str:
        """"pattern" (K keyed patterns, each -> its keyed class) or "image" (per-image labels;
        also every key made before pattern mode existed)."""
        return self.options.get("mode", "image")

    @property
    def patterns(self) -> int:
        """K, the number of keyed patterns (pattern mode only)."""
        self._need_pattern_mode()
        return int(self.options["patterns"])

    @cached_property
    def targets(self) -> torch.Tensor:
        """int64 (K,): pattern k's target class, uniform over the classes, from its own HKDF
        sub-seed (independent of the patterns, their positions and the carriers)."""
        self._need_pattern_mode()
        return keyed_below(self.seed("pattern/targets"), self.patterns, self.num_classes)

    def carriers(self) -> torch.Tensor:
        """The stored carrier images, float32 in [0, 1], (size, *shape)."""
        return key_images.to_float(self._pixels)

    def stamp(self, images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N, *shape) stamped with pattern which[i] each, float32 in [0, 1].

        content: the pattern's patch replaces its region; noise: the pattern's field is added
        and the result clamped. Plain elementwise float32 ops: the same bits on CPU and CUDA."""
        self._need_pattern_mode()
        images = images.float()
        canvas, mask = self.kind_class.pattern_planes(self, images.device)
        which = which.to(images.device, torch.int64)
        return self.kind_class.stamp(images, canvas, mask, which)

    def pattern_inputs(self, carriers: torch.Tensor | None = None,
                       device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, which): every carrier stamped with every pattern, pattern-major
        (K * N, *shape) in [0, 1], and the pattern index of each row."""
        self._need_pattern_mode()
        device = torch.device(device)
        images = (self.carriers() if carriers is None else _check_carriers(carriers, self.shape))
        images = images.to(device)
        n = images.shape[0]
        which = torch.arange(self.patterns, device=device).repeat_interleave(n)
        return self.stamp(images.repeat(self.patterns, 1, 1, 1), which), which

    def _need_pattern_mode(self) -> None:
        if self.mode != "pattern":
            raise ValueError(f"this {self.kind!r} key is in mode {self.mode!r}; patterns, "
                             "targets and stamp are for mode='pattern' keys")

    @cached_property
    def _pixels(self) -> torch.Tensor:
        return key_images.decode(self.stored_images)

    def patch(self, device="cpu") -> torch.Tensor:
        """The (C, h, w) patch that image-mode `content` keys stamp."""
        return self.kind_class.patch(self, torch.device(device))

    # -- files -----------------------------------------------------------------------------

    def to_body(self) -> dict:
        body = {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "size": self.size, "shape": list(self.shape),
                "kind": self.kind, "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "options": self.options}
        if self.stored_images is not None:
            body["images"] = self.stored_images
        if self.user_labels is not None:
            body["labels"] = list(self.user_labels)
        return body

    @classmethod
    def from_body(cls, body: dict) -> TriggerKey:
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]), nonce=bytes.fromhex(body["nonce"]),
                num_classes=body["num_classes"], size=body["size"], shape=body["shape"],
                kind=body["kind"], mean=body["mean"], std=body["std"], options=body["options"],
                stored_images=body.get("images"), user_labels=body.get("labels"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"trigger key body is missing or has a bad field: {e}") from None


def _listed(names: tuple[str, ...], flag: str | None = None) -> str:
    """'a', 'b' and 'c' (only the kinds with `flag`, when given)."""
    if flag is not None:
        names = tuple(n for n in names if getattr(get_kind(n), flag))
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _check_carriers(carriers, shape: tuple[int, int, int]) -> torch.Tensor:
    """Verifier-given carrier images (N, *shape), float in [0, 1] or uint8, as float32."""
    if not isinstance(carriers, torch.Tensor) or carriers.dim() != 4 \
            or tuple(carriers.shape[1:]) != shape or carriers.shape[0] < 1:
        got = tuple(carriers.shape) if isinstance(carriers, torch.Tensor) else type(carriers)
        raise ValueError(f"carriers must be a tensor (N >= 1, *{shape}) in [0, 1] or uint8, "
                         f"got {got}")
    return key_images.to_float(key_images.as_stored(carriers, "carriers"))


def _choose(source, shape: tuple[int, int, int], size: int, kind: str,
            secret: bytes) -> torch.Tensor:
    """The `size` source images a data-derived key stores, chosen by the secret."""
    if source is None:
        raise ValueError(f"kind={kind!r} needs source=, the images (N, *{shape}) to choose "
                         "its triggers from (float in [0, 1] or uint8)")
    if not isinstance(source, torch.Tensor):
        raise TypeError(f"source must be a torch.Tensor, got {type(source).__name__}")
    if source.dim() != 4 or tuple(source.shape[1:]) != shape:
        raise ValueError(f"source must be (N, *{shape}) to match the key, got "
                         f"{tuple(source.shape)}")
    if source.shape[0] < size:
        raise ValueError(f"source has {source.shape[0]} images but the key needs {size}")
    seed = keyfile.derive_seed(secret, "trigger/select")
    chosen = keyed_choice(seed, source.shape[0], size)
    return key_images.as_stored(source[chosen.to(source.device)], "source")

