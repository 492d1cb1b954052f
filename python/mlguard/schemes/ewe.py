"""Entangled Watermarks (EWE): Jia, Choquette-Choo, Chandrasekaran and Papernot, "Entangled
Watermarks as a Defense against Model Extraction", USENIX Security 2021.

What the paper does, and where this file follows it:

- **Triggers** (Sec. 4, "in-distribution" watermarks): images of a *source* class carrying
  a small trigger patch, all labelled with one *target* class. Here the patch is keyed (its
  pixels and its position come from the secret) and the key stores `size` source-class
  images chosen by the secret, so the key file alone regenerates the exact triggers.
- **Entanglement** (Sec. 4, the soft nearest-neighbour loss of Frosst et al., ICML 2019,
  Eq. 1, with temperature T): training alternates `ratio` ordinary batches with one
  watermark batch of half triggers, half target-class images, and on that batch adds
  ``- factor * sum_layers SNNL(h_l, w, T)`` to the cross-entropy, where `w` tells triggers
  (1) from target-class images (0) and `h_l` are hidden representations (ReLU of them, with
  cosine distances, as in the authors' code). Maximizing the SNNL makes triggers and
  target-class images indistinguishable in those layers, so a model extracted by labelling
  target-class-like inputs inherits the trigger behaviour (Algorithm 1). The authors' code
  (cleverhans-lab/entangled-watermark, `models.py`/`train.py`) uses three layers (the two
  conv outputs and the first dense layer of its 2-conv net), cosine distance, ratio 2 for
  Fashion-MNIST and a factor of 32 on a cross-entropy *summed* over a 128-image batch, i.e.
  0.25 on the mean cross-entropy used here (our default). Not reproduced: the learned
  temperature (ours is fixed, `temperature`), the gradient-chosen patch position (ours is
  keyed) and the FGSM-style refinement of the trigger images (ours are the stored images
  with the patch stamped).
- **Reading**: the suspect's answers on the triggers; a match is the target class.

**The null, and why it is conservative and not exact.** EWE uses one target class for all
triggers (the entanglement is with that class's cluster), so a model that never saw the key
answers the target on a patched source image at a rate set by how alike the two classes
look, not at 1/C: keyed per-trigger targets would make the null exact but are not EWE (there
would be no one target cluster to entangle with). So the key is calibrated at generation on
the owner's **reference models** (trained independently of the marked model: other seeds,
other data orders): each reads the key's triggers, the counts are stored in the key body,
and ``chance`` is ``conservative_chance`` of them (the largest model's one-sided
Clopper-Pearson bound at 99.9%). The verdict then tests against that upper bound; it is
only as good as the reference models are representative of independent models, which the
key says in ``Reading.extra["null"]``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from .._checks import check_int, check_real
from ..keys import images as key_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below, keyed_choice
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, conservative_chance
from .base import register_scheme

SCHEME = "ewe"
CONFIDENCE = 1 - 1e-3  # of the conservative chance (conservative_chance's default)


def _normalization(mean, std, channels: int):
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std go together (both or neither), got mean={mean!r}, "
                         f"std={std!r}")
    if mean is None:
        return None, None
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
                or len(value) != channels:
            raise ValueError(f"{name} needs one value per channel ({channels}), got {value!r}")
    return (tuple(check_real(f"mean[{i}]", v) for i, v in enumerate(mean)),
            tuple(check_real(f"std[{i}]", v, low=0, low_open=True) for i, v in enumerate(std)))


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The model's classes (argmax) for `inputs`, in eval mode (restored after), on the
    model's device; int64 on the CPU."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        out = [model(chunk.to(device)).argmax(1).cpu() for chunk in inputs.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


@dataclass(frozen=True)
class EWEKey(Key):
    """An EWE key: the secret, the source and target classes, the keyed patch, the stored
    source images and the reference models' reads that set the conservative chance."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    source_class: int
    target_class: int
    size: int
    shape: tuple[int, int, int]
    patch_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    stored_images: dict = field(repr=False)  # keys.images.encode() form, uint8 or [0, 1]
    reference_matches: tuple[int, ...]  # one per reference model, each out of `size`
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, source_class, target_class, size, shape,
                 patch_size, mean, std, stored_images, reference_matches, label=None):
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=2)
        source_class = check_int("source_class", source_class, low=0, high=num_classes - 1)
        target_class = check_int("target_class", target_class, low=0, high=num_classes - 1)
        if source_class == target_class:
            raise ValueError(f"source_class and target_class must differ, both are "
                             f"{source_class}")
        size = check_int("size", size, low=1)
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else shape
        if not (isinstance(shape, tuple) and len(shape) == 3):
            raise ValueError(f"shape must be (C, H, W), got {shape!r}")
        shape = tuple(check_int(f"shape[{i}]", s, low=1) for i, s in enumerate(shape))
        patch_size = check_int("patch_size", patch_size, low=1, high=min(shape[1:]))
        mean, std = _normalization(mean, std, shape[0])
        decoded = key_images.decode(stored_images)
        if tuple(decoded.shape) != (size, *shape):
            raise ValueError(f"stored images are {tuple(decoded.shape)}, the key needs "
                             f"{(size, *shape)}")
        if isinstance(reference_matches, (str, bytes)) or not hasattr(reference_matches,
                                                                      "__len__"):
            raise ValueError(f"reference_matches must be a list of ints, got "
                             f"{reference_matches!r}")
        refs = tuple(check_int(f"reference_matches[{i}]", m, low=0, high=size)
                     for i, m in enumerate(reference_matches))
        if not refs:
            raise ValueError("an EWE key needs at least one reference model's read: its null "
                             "is calibrated on them (reference_matches is empty)")
        key = cls(secret=bytes(secret), nonce=bytes(nonce), num_classes=num_classes,
                  source_class=source_class, target_class=target_class, size=size,
                  shape=shape, patch_size=patch_size, mean=mean, std=std,
                  stored_images=stored_images, reference_matches=refs,
                  label=keyfile.check_label(label))
        key.__dict__["_pixels"] = decoded
        key.chance  # noqa: B018 -- refuses now a key whose references match every trigger
        return key

    def to_body(self) -> dict:
        return {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "source_class": self.source_class,
                "target_class": self.target_class, "size": self.size,
                "shape": list(self.shape), "patch_size": self.patch_size,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "images": self.stored_images,
                "reference_matches": list(self.reference_matches)}

    @classmethod
    def from_body(cls, body: dict) -> EWEKey:
        try:
            if body["scheme"] != SCHEME:
                raise ValueError(f"scheme must be {SCHEME!r}, got {body['scheme']!r}")
            known = {"scheme", "secret", "nonce", "num_classes", "source_class",
                     "target_class", "size", "shape", "patch_size", "mean", "std", "images",
                     "reference_matches"}
            unknown = set(body) - known
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            return cls._checked(secret=keyfile.secret_from_hex(body["secret"]),
                                nonce=bytes.fromhex(body["nonce"]),
                                num_classes=body["num_classes"],
                                source_class=body["source_class"],
                                target_class=body["target_class"], size=body["size"],
                                shape=body["shape"], patch_size=body["patch_size"],
                                mean=body["mean"], std=body["std"],
                                stored_images=body["images"],
                                reference_matches=body["reference_matches"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"EWE key body is missing or has a bad field: {e!r}") from None

    # -- derived values ----------------------------------------------------------------------

    def seed(self, purpose: str) -> int:
        return keyfile.derive_seed(self.secret, f"ewe/{purpose}")

    @cached_property
    def _pixels(self) -> torch.Tensor:
        return key_images.decode(self.stored_images)

    @cached_property
    def patch(self) -> tuple[torch.Tensor, int, int]:
        """(pattern (C, p, p) of 0/1 pixels, row, column): keyed pixels at a keyed place."""
        c, h, w = self.shape
        p = self.patch_size
        bits = keyed_below(self.seed("patch"), c * p * p, 2).float().reshape(c, p, p)
        row = keyed_below(self.seed("position"), 1, h - p + 1, stream=0)
        col = keyed_below(self.seed("position"), 1, w - p + 1, stream=1)
        return bits, int(row[0]), int(col[0])

    def stamp(self, images01: torch.Tensor) -> torch.Tensor:
        """`images01` (N, C, H, W) in [0, 1] with the keyed patch stamped (a copy)."""
        bits, row, col = self.patch
        out = images01.clone()
        p = self.patch_size
        out[:, :, row:row + p, col:col + p] = bits.to(out.device, out.dtype)
        return out

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return images01
        m = torch.tensor(self.mean, device=images01.device)[:, None, None]
        s = torch.tensor(self.std, device=images01.device)[:, None, None]
        return (images01 - m) / s

    def triggers(self, device="cpu") -> torch.Tensor:
        """The model inputs that are read: the stored source images, patched, normalized."""
        return self.normalize(self.stamp(key_images.to_float(self._pixels).to(device)))

    @cached_property
    def chance(self) -> float:
        return conservative_chance(list(self.reference_matches),
                                   [self.size] * len(self.reference_matches), CONFIDENCE)

    # -- generation --------------------------------------------------------------------------

    @classmethod
    def generate(cls, images: torch.Tensor, labels: torch.Tensor, reference_models: Sequence[nn.Module],
                 *, num_classes: int = 10, source_class: int | None = None,
                 target_class: int | None = None, size: int = 100, patch_size: int = 4,
                 mean=None, std=None, secret: bytes | str | None = None,
                 label: str | None = None) -> EWEKey:
        """A new key. `images` (N, C, H, W; uint8, or float in [0, 1]) and `labels` (N,) are
        the owner's data; `size` images of `source_class` are chosen from them by the secret.
        `source_class`/`target_class` default to two distinct classes drawn from the secret.
        `reference_models`: models trained independently of the marked one (other seeds, other
        data orders; the more the better, at least one), read on the triggers to set the
        conservative chance. `mean`/`std`: the normalization the models were trained with."""
        secret = keyfile.secret_or_new(secret)
        num_classes = check_int("num_classes", num_classes, low=2)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a 4-D tensor (N, C, H, W), got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},), got "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
        pair = keyed_below(keyfile.derive_seed(secret, "ewe/classes"), 2, num_classes)
        if source_class is None:
            source_class = int(pair[0])
        source_class = check_int("source_class", source_class, low=0, high=num_classes - 1)
        if target_class is None:  # a keyed class other than the source
            target_class = (source_class + 1 + int(pair[1]) % (num_classes - 1)) % num_classes
        pool = (labels == source_class).nonzero().flatten()
        size = check_int("size", size, low=1)
        if pool.numel() < size:
            raise ValueError(f"images hold {pool.numel()} images of source_class "
                             f"{source_class}, fewer than size={size}")
        chosen = pool[keyed_choice(keyfile.derive_seed(secret, "ewe/choose"), pool.numel(),
                                   size)]
        stored = key_images.encode(key_images.as_stored(images[chosen], "images"))
        if isinstance(reference_models, nn.Module) or not isinstance(reference_models, Sequence):
            raise TypeError("reference_models must be a sequence of torch.nn.Module, got "
                            f"{type(reference_models).__name__}")
        if not reference_models:
            raise ValueError("reference_models must hold at least one reference model (trained "
                             "independently of the marked model): the null is calibrated on "
                             "them")
        draft = cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                             source_class=source_class, target_class=target_class, size=size,
                             shape=tuple(images.shape[1:]), patch_size=patch_size, mean=mean,
                             std=std, stored_images=stored, reference_matches=[0],
                             label=label)
        inputs = draft.triggers()
        counts = [int((predict(m, inputs) == draft.target_class).sum()) for m in reference_models]
        return cls._checked(secret=secret, nonce=draft.nonce, num_classes=num_classes,
                            source_class=source_class, target_class=target_class, size=size,
                            shape=draft.shape, patch_size=draft.patch_size, mean=draft.mean,
                            std=draft.std, stored_images=stored, reference_matches=counts,
                            label=label)


def snnl(features: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft nearest-neighbour loss (Frosst et al., ICML 2019, Eq. 1; EWE Sec. 4) of the rows
    of `features` (flattened, ReLU'd as in EWE's code) with binary group labels `w`, on
    cosine distances at `temperature`. High = the groups are entangled."""
    x = torch.relu(features.flatten(1))
    x = nn.functional.normalize(x, dim=1, eps=1e-12)
    dist = 1 - x @ x.T
    n = x.shape[0]
    sim = torch.exp(-dist / temperature) * (1 - torch.eye(n, device=x.device, dtype=x.dtype))
    same = (w[:, None] == w[None, :]).to(x.dtype)
    prob = (sim * same).sum(1) / (1e-5 + sim.sum(1))
    return -torch.log(1e-5 + prob).mean()


def default_layers(model: nn.Module, count: int = 3) -> tuple[str, ...]:
    """The hidden layers EWE entangles: the last `count` Conv2d/Linear modules before the
    output layer (for a 2-conv net, as in the authors' code: conv1, conv2, dense1)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(names) < 2:
        raise ValueError("layers='auto' needs a model with at least two Conv2d/Linear "
                         f"layers, found {names}")
    return tuple(names[:-1][-count:])


class EWEEmbedding(Embedding):
    """Algorithm 1's training: every (`ratio` + 1)-th batch the user's batch is followed by a
    watermark batch (`half` patched source images and `half` target-class images, all
    labelled with the target), and the loss adds -factor * sum of SNNLs on it."""

    def __init__(self, key: EWEKey, images: torch.Tensor, labels: torch.Tensor, *,
                 ratio: int = 2, half: int = 64, factor: float = 0.25,
                 temperature: float = 0.1, layers="auto"):
        self.key = key
        self.ratio = check_int("ratio", ratio, low=0)
        self.half = check_int("half", half, low=1)
        self.factor = check_real("factor", factor, low=0)
        self.temperature = check_real("temperature", temperature, low=0, low_open=True)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 \
                or tuple(images.shape[1:]) != key.shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, key.shape))}), got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},)")
        self._sources = images[labels == key.source_class]
        self._targets = images[labels == key.target_class]
        if len(self._sources) == 0 or len(self._targets) == 0:
            raise ValueError(f"images hold {len(self._sources)} images of source_class "
                             f"{key.source_class} and {len(self._targets)} of target_class "
                             f"{key.target_class}; EWE needs both")
        if layers != "auto":
            if isinstance(layers, str):
                layers = (layers,)
            layers = tuple(layers)
            if not layers or not all(isinstance(n, str) for n in layers):
                raise ValueError(f"layers must be 'auto' or module names, got {layers!r}")
        self.layers = layers
        self._order = torch.Generator().manual_seed(key.seed("training") & (2**63 - 1))
        self._step = 0
        self._rows = 0  # watermark rows at the end of the current batch

    def _draw(self, pool: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(len(pool), (self.half,), generator=self._order)
        return key_images.to_float(key_images.as_stored(pool[idx], "images"))

    def batch(self, x, y):
        self._step += 1
        self._rows = 0
        if self._step % (self.ratio + 1):
            return x, y
        k = self.key
        wm = torch.cat([k.stamp(self._draw(self._sources)), self._draw(self._targets)])
        wm = k.normalize(wm).to(x.device, x.dtype)
        self._rows = len(wm)
        target = torch.full((len(wm),), k.target_class, dtype=y.dtype, device=y.device)
        return torch.cat([x, wm]), torch.cat([y, target])

    def loss(self, model, x, y):
        if not self._rows or self.factor == 0:
            return torch.zeros((), device=x.device)
        wm = x[-self._rows:]
        w = torch.arange(self._rows, device=x.device) < self.half  # 1: trigger, 0: target
        return -self.factor * sum(snnl(h, w, self.temperature)
                                  for h in hidden(model, wm, self.layers))


def hidden(model: nn.Module, x: torch.Tensor, layers="auto") -> list[torch.Tensor]:
    """The outputs of `layers` (module names, or 'auto': default_layers) for input `x`."""
    names = default_layers(model) if layers == "auto" else tuple(layers)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of the model; it has "
                         f"{[n for n in modules if n][:20]}")
    out: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(
        lambda _m, _i, o, n=n: out.__setitem__(n, o)) for n in names]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [out[n] for n in names]


@register_scheme
class EWE(Scheme):
    """Entangled Watermarks (Jia et al., USENIX Security 2021); see the module docstring."""

    name = SCHEME
    key_type = EWEKey
    summary = ("Entangled Watermarks (Jia et al., USENIX Security 2021): patched source-class "
               "images -> one target class, entangled by the soft nearest-neighbour loss; "
               "conservative null from reference models")

    @classmethod
    def generate(cls, *, secret=None, **options) -> EWEKey:
        return EWEKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from ..cli._args import add_arch_arguments

        parser.add_argument("--data", default="fashion-mnist", choices=("fashion-mnist",),
                            help="the owner's data the source images are chosen from "
                                 "(train split)")
        parser.add_argument("--references", nargs="+", required=True, metavar="FILE",
                            help="state_dict files of reference models trained "
                                 "independently of the marked model (the null's calibration)")
        add_arch_arguments(parser, "the reference models' architecture", required=True)
        parser.add_argument("--source-class", type=int, default=None)
        parser.add_argument("--target-class", type=int, default=None)
        parser.add_argument("--size", type=int, default=100, help="triggers (default 100)")
        parser.add_argument("--patch-size", type=int, default=4)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> EWEKey:
        from .. import data
        from ..cli._args import build_arch

        images, labels = data.fashion_mnist("train")
        references = []
        for path in args.references:
            model = build_arch(args.arch, args.arch_kwargs)
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            references.append(model)
        return EWEKey.generate(images, labels, references, num_classes=10,
                               source_class=args.source_class, target_class=args.target_class,
                               size=args.size, patch_size=args.patch_size,
                               mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD)

    @classmethod
    def attacker_key(cls, key: EWEKey, *, model=None, data=None) -> EWEKey:
        """The thief's own EWE key, as large and patched like ``key``, its source images
        (and keyed classes) drawn from the attacker's ``data`` (an (x, y) pair as the model
        takes it; see _adversarial.thief_material)."""
        from . import _adversarial as adv

        if not isinstance(key, EWEKey):
            raise TypeError(f"key must be an EWEKey, got {type(key).__name__}")
        _, images, labels, refs = adv.thief_material(key, model, data, SCHEME)
        return EWEKey.generate(images, labels, refs, num_classes=key.num_classes,
                               size=key.size, patch_size=key.patch_size, mean=key.mean,
                               std=key.std)

    @classmethod
    def embedding(cls, key: EWEKey, images=None, labels=None, **options) -> EWEEmbedding:
        """`images`, `labels`: the owner's training data (uint8 or [0, 1] floats) from which
        source- and target-class images are drawn. Options: `ratio` (ordinary batches per
        watermark batch, 2), `half` (64), `factor` (0.25), `temperature` (0.1), `layers`."""
        if not isinstance(key, EWEKey):
            raise TypeError(f"key must be an EWEKey, got {type(key).__name__}")
        if images is None or labels is None:
            raise ValueError("EWE's embedding needs images= and labels= (the owner's training "
                             "data: its source- and target-class images make the watermark "
                             "batches)")
        return EWEEmbedding(key, images, labels, **options)

    @classmethod
    def read(cls, key: EWEKey, suspect: Suspect, options: ReadOptions) -> Reading:
        if suspect.module is None:
            raise ValueError("EWE reads a model's answers: the suspect needs its module")
        answers = predict(suspect.module, key.triggers(), options.batch_size)
        matches = int((answers == key.target_class).sum())
        return Reading(matches, key.size, key.chance, extra={
            "null": (f"conservative: P(match) <= {key.chance:.4g}, the {CONFIDENCE:.1%} "
                     f"Clopper-Pearson bound of the worst of {len(key.reference_matches)} "
                     "reference models trained independently by the owner (reads "
                     f"{list(key.reference_matches)} of {key.size}); not exact: the target "
                     "is one class for all triggers"),
            "target_class": key.target_class, "source_class": key.source_class})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = EWEKey.from_body(body)
        return key.size, key.chance

    @classmethod
    def input_normalization(cls, key: EWEKey):
        return None if key.mean is None else (key.mean, key.std)

    @classmethod
    def input_shape(cls, key: EWEKey):
        return key.shape


def trigger_accuracy(model: nn.Module, key: EWEKey) -> float:
    """The fraction of the key's triggers the model answers with the target class."""
    return float((predict(model, key.triggers()) == key.target_class).float().mean())


def entanglement(model: nn.Module, key: EWEKey, target_images: torch.Tensor,
                 temperature: float = 0.1, layers="auto") -> float:
    """Mean SNNL (over `layers`) between the key's triggers and `target_images` (uint8 or
    [0, 1], as many as triggers are used): higher = more entangled (EWE Sec. 4)."""
    n = min(key.size, len(target_images))
    if n < 2:
        raise ValueError("entanglement needs at least 2 triggers and 2 target images")
    targets = key.normalize(key_images.to_float(key_images.as_stored(target_images[:n])))
    x = torch.cat([key.triggers()[:n], targets])
    w = torch.arange(2 * n) < n
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            values = [float(snnl(h, w, temperature)) for h in hidden(model, x, layers)]
    finally:
        model.train(was)
    return math.fsum(values) / len(values)
