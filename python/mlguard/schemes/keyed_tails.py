"""Keyed tails: a serving-time watermark whose rule a thief learns early, with an exact null.

DAWN (dawn.py) answers random keyed labels that a stolen copy learns only by memorizing them,
late in its training: a thief who stops early carries none of them and loses nothing for it
(docs/guides/proving-extraction.md). Here the API's changed answers follow a *rule*, which a
network learns as it learns the task:

- **The rule** (``KeyedTailsKey``): ``directions`` smooth random images w_i (keyed uniform
  noise on a ``grid`` x ``grid`` lattice per channel, bilinearly upsampled to the input, unit
  norm) and, for each, two tails: the inputs whose projection <w_i, x - center> lies beyond
  the owner images' upper or lower ``tail`` quantile (x is the tensor the model takes, after
  normalization; center is the owner images' mean). Each of the 2 x directions *cells* has a
  keyed class; the API (``KeyedTailsWrapper``) answers a query in a cell with that class (the
  cell it lies deepest in, by the logits' top two swapped, as DAWN's wrapper does), every
  other query with the model's own answer. About 2 x directions x tail of natural queries are
  changed (0.002 x 5 x 2 = 2% by default).
- **The read**: the key stores each cell's owner images (the ``tail`` share of the owner's
  images deepest in it, uint8) and the owner model's answers on them. On the suspect's
  answers D(c) = rate_suspect(c | cell) - rate_owner(c | cell); a cell *matches* when the
  keyed class k is the only largest, D(k) > D(c) for every c != k.

**The null, exact (a bound).** The cells' classes are keyed draws uniform over the C classes
(``keyed_below`` under their own sub-seed of the secret), independent of the directions, the
cells' images, the owner's answers and any model that was not trained on the API's answers
(H0). For such a model the C values D(1..C) are fixed given the models and the images, and k
is uniform among them, so P(D(k) is the only largest) <= 1/C; the cells' classes are
independent draws, so the matches are at most Binomial(2 x directions, 1/C): no calibration
models. What it rests on: the classes are the secret's (recomputed and checked when a key is
opened) and the suspect never saw the API's answers (a model trained on them is not H0: that
is the point). A copy made without the API (fine-tuning, transfer of the weights) does not
carry the rule: read an embedded key for those.

``embedding()`` adds nothing to training: the rule acts at serving time, like DAWN.
"""

from __future__ import annotations

import argparse
import base64
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ..keys import images as key_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below
from ..keys.trigger_key import _check_shape
from . import _adversarial as adv
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme
from .dawn import _from_raw, query_bytes_raw

NAME = "keyed-tails"
DEFAULT_DIRECTIONS = 5
DEFAULT_TAIL = 0.002
DEFAULT_GRID = 7
MIN_PER_CELL = 10  # owner images per cell: fewer make a cell's rate too coarse to read
_LEVELS = 1 << 16  # the lattice's keyed values: uniform on 2^16 levels in [-1, 1)
_BODY = {"scheme", "secret", "nonce", "num_classes", "shape", "mean", "std", "grid", "tail",
         "directions", "center", "upper", "lower", "classes", "images", "owner_answers"}


def keyed_classes(secret: bytes, cells: int, num_classes: int) -> list[int]:
    """Each cell's class: keyed draws uniform over the classes, under their own sub-seed."""
    return keyed_below(keyfile.derive_seed(secret, f"{NAME}/classes"), cells,
                       num_classes).tolist()


def keyed_directions(secret: bytes, count: int, shape: tuple[int, int, int],
                     grid: int) -> torch.Tensor:
    """(count, C*H*W) float32 unit directions: keyed lattice noise, bilinearly upsampled."""
    channels, height, width = shape
    levels = keyed_below(keyfile.derive_seed(secret, f"{NAME}/directions"),
                         count * channels * grid * grid, _LEVELS)
    lattice = (levels.double() * (2.0 / _LEVELS) - 1.0).view(count, channels, grid, grid)
    w = F.interpolate(lattice, size=(height, width), mode="bilinear", align_corners=False)
    w = w.flatten(1)
    return (w / w.norm(dim=1, keepdim=True)).float()


def _encode(t: torch.Tensor) -> dict:
    return {"dtype": "float32", "shape": list(t.shape),
            "data": base64.b64encode(query_bytes_raw(t.float())).decode()}


def _decode(doc, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not (isinstance(doc, dict) and doc.get("dtype") == "float32"
            and list(doc.get("shape", ())) == list(shape) and isinstance(doc.get("data"), str)):
        raise ValueError(f"{NAME} key field {name!r} must be float32 of shape {list(shape)}")
    try:
        t = _from_raw(base64.b64decode(doc["data"], validate=True), "float32", list(shape))
    except ValueError as e:
        raise ValueError(f"{NAME} key field {name!r}: {e}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{NAME} key field {name!r} holds a value that is not finite")
    return t


@dataclass(frozen=True)
class KeyedTailsKey(Key):
    """A keyed-tails key: the rule (directions, center, tail thresholds, the cells' keyed
    classes) that the serving wrapper applies, and each cell's owner images with the owner
    model's answers, that a read compares a suspect with."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    grid: int
    tail: float
    directions: torch.Tensor = field(repr=False, compare=False)
    center: torch.Tensor = field(repr=False, compare=False)
    upper: tuple[float, ...] = field(repr=False)
    lower: tuple[float, ...] = field(repr=False)
    classes: tuple[int, ...] = field(repr=False)
    stored_images: dict = field(repr=False)
    owner_answers: tuple[int, ...] = field(repr=False)
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, shape, mean, std, grid, tail, directions,
                 center, upper, lower, classes, stored_images, owner_answers,
                 label=None) -> KeyedTailsKey:
        secret = keyfile.secret_from_hex(secret) if isinstance(secret, str) else bytes(secret)
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=2)
        shape = _check_shape(shape)
        mean, std = adv.normalization(mean, std, shape)
        grid = check_int("grid", grid, low=2)
        tail = check_real("tail", tail, low=0, high=0.5, low_open=True, high_open=True)
        upper, lower = tuple(map(float, upper)), tuple(map(float, lower))
        m = len(upper)
        if m < 1 or len(lower) != m or any(lo >= up for lo, up in zip(lower, upper)):
            raise ValueError(f"a {NAME} key needs one upper and one lower threshold per "
                             f"direction (lower < upper), got {len(upper)} and {len(lower)}")
        d = shape[0] * shape[1] * shape[2]
        if not isinstance(directions, torch.Tensor):
            directions = _decode(directions, "directions", (m, d))
            center = _decode(center, "center", (d,))
        classes = tuple(int(c) for c in classes)
        if list(classes) != keyed_classes(secret, 2 * m, num_classes):
            raise ValueError("the cells' classes are not the secret's draws (an edited key, or "
                             "classes of another secret): the null rests on them")
        pixels = key_images.decode(stored_images)
        if pixels.dtype != torch.uint8 or tuple(pixels.shape[1:]) != shape \
                or pixels.shape[0] % (2 * m) or pixels.shape[0] == 0:
            raise ValueError(f"key images must be uint8 (2 x {m} cells x n, *{shape}), got "
                             f"{pixels.dtype} {tuple(pixels.shape)}")
        owner_answers = tuple(key_images.read_labels(list(owner_answers), pixels.shape[0],
                                                     num_classes))
        key = cls(secret=secret, nonce=bytes(nonce), num_classes=num_classes, shape=shape,
                  mean=mean, std=std, grid=grid, tail=tail, directions=directions,
                  center=center, upper=upper, lower=lower, classes=classes,
                  stored_images=stored_images, owner_answers=owner_answers,
                  label=keyfile.check_label(label))
        key.__dict__["_pixels"] = pixels
        return key

    @classmethod
    def generate(cls, *, model: nn.Module, images, num_classes: int,
                 directions: int = DEFAULT_DIRECTIONS, tail: float = DEFAULT_TAIL,
                 grid: int = DEFAULT_GRID, mean=None, std=None,
                 secret: bytes | str | None = None, label: str | None = None,
                 batch_size: int = 256) -> KeyedTailsKey:
        """A new key from the owner's trained ``model`` and its ``images`` ((N, C, H, W) uint8,
        or float in [0, 1] before the normalization ``mean``/``std`` the model takes): the
        directions and classes from the secret, the thresholds and each cell's images from
        ``images``, the owner answers from ``model``."""
        adv.check_model(model)
        directions = check_int("directions", directions, low=1)
        tail = check_real("tail", tail, low=0, high=0.5, low_open=True, high_open=True)
        grid = check_int("grid", grid, low=2)
        num_classes = check_int("num_classes", num_classes, low=2)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError("images must be a tensor (N, C, H, W), uint8 or float in [0, 1], "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        pixels = key_images.as_stored(images, "images")
        shape = _check_shape(tuple(pixels.shape[1:]))
        mean, std = adv.normalization(mean, std, shape)
        per_cell = round(tail * pixels.shape[0])
        if per_cell < MIN_PER_CELL:
            raise ValueError(f"tail={tail} of {pixels.shape[0]} images gives {per_cell} images "
                             f"per cell, fewer than {MIN_PER_CELL}: give more images or a "
                             f"larger tail")
        secret = keyfile.secret_or_new(secret)
        w = keyed_directions(secret, directions, shape, grid)
        x = adv.normalize(key_images.to_float(pixels), mean, std).flatten(1)
        center = x.mean(0)
        z = (x - center) @ w.T
        upper, lower = torch.quantile(z, 1 - tail, dim=0), torch.quantile(z, tail, dim=0)
        members = torch.cat([z.topk(per_cell, dim=0).indices.T,
                             (-z).topk(per_cell, dim=0).indices.T]).flatten()
        answers = adv.predictions(model, key_images.to_float(pixels[members]), mean, std,
                                  num_classes, batch_size)
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            shape=shape, mean=mean, std=std, grid=grid, tail=tail,
                            directions=w, center=center, upper=upper.tolist(),
                            lower=lower.tolist(), classes=keyed_classes(secret, 2 * directions,
                                                                         num_classes),
                            stored_images=key_images.encode(pixels[members]),
                            owner_answers=answers.tolist(), label=label)

    @property
    def cells(self) -> int:
        return len(self.classes)

    @property
    def chance(self) -> float:
        """The null's exact per-cell bound, 1/C."""
        return 1.0 / self.num_classes

    def _rule_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The rule's tensors on `device`, moved there once (the wrapper calls this per batch)."""
        rules = self.__dict__.setdefault("_rules", {})
        if device not in rules:
            rules[device] = tuple(t.to(device) for t in (
                self.directions, self.center, torch.tensor(self.upper),
                torch.tensor(self.lower), torch.tensor(self.classes)))
        return rules[device]

    def cell_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(in a cell?, the keyed class of the cell it lies deepest in) per input ``x``, the
        tensors the model takes (normalized), on x's device."""
        w, center, upper, lower, classes = self._rule_on(x.device)
        z = (x.detach().flatten(1).float() - center) @ w.T
        depth = torch.cat([z - upper, lower - z], dim=1)  # cells: upper tails, then lower
        best, cell = depth.max(dim=1)
        return best > 0, classes[cell]

    def to_body(self) -> dict:
        return {"scheme": NAME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "shape": list(self.shape),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "grid": self.grid, "tail": self.tail, "directions": _encode(self.directions),
                "center": _encode(self.center), "upper": list(self.upper),
                "lower": list(self.lower), "classes": list(self.classes),
                "images": self.stored_images, "owner_answers": list(self.owner_answers)}

    @classmethod
    def from_body(cls, body: dict) -> KeyedTailsKey:
        keyfile.check_body_fields(body, NAME, _BODY)
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]), nonce=bytes.fromhex(body["nonce"]),
                **{k: body[k] for k in _BODY - {"scheme", "secret", "nonce", "images"}},
                stored_images=body["images"])
        except (TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"{NAME} key body has a bad field: {e}") from None


class KeyedTailsWrapper(nn.Module):
    """The owner's model behind the keyed-tails rule: ``wrapper(x)`` (x: what the model
    takes) answers like the model except for queries in a cell, which get the cell's keyed
    class. ``output``: "logits" (the model's, the keyed class's logit swapped with the top
    one) or "labels" (int64 classes)."""

    is_api = True  # answers, not a network: extraction attacks need the student's architecture

    def __init__(self, model: nn.Module, key: KeyedTailsKey, output: str = "logits"):
        super().__init__()
        adv.check_model(model)
        _check_key(key)
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got {output!r}")
        self.model, self.key, self.output = model, key, output
        self.served = self.changed = 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.key.shape \
                or not x.is_floating_point():
            raise ValueError(f"x must be a batch of inputs (N, *{self.key.shape}) as the model "
                             f"takes them (floats, normalized), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        logits = self.model(x)
        if logits.dim() != 2 or logits.shape[1] != self.key.num_classes:
            raise ValueError(f"the model gives {tuple(logits.shape)} outputs, the key is for "
                             f"{self.key.num_classes} classes")
        hit, keyed = self.key.cell_of(x)
        top = logits.argmax(1)
        served = torch.where(hit, keyed.to(top.device), top)
        self.served += len(x)
        self.changed += int((served != top).sum())
        if self.output == "labels":
            return served
        out = logits.clone()
        rows = hit.nonzero().flatten()
        a, b = out[rows, top[rows]].clone(), out[rows, served[rows]].clone()
        out[rows, top[rows]], out[rows, served[rows]] = b, a
        return out


@register_scheme
class KeyedTails(adv.StoredInputs, Scheme):
    """Keyed tails; see the module docstring."""

    name = NAME
    key_type = KeyedTailsKey
    summary = ("keyed tails: the serving API answers queries in keyed tails of smooth keyed "
               "projections with keyed classes, a rule extracted copies learn early; exact "
               "null 1/C")

    @classmethod
    def generate(cls, *, secret=None, **options) -> KeyedTailsKey:
        return KeyedTailsKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        adv.add_owner_model_arguments(parser, "the network of --model")
        adv.add_owner_data_arguments(parser, count=20000)
        parser.add_argument("--num-classes", type=int, default=10,
                            help="the task's number of classes (default 10)")
        parser.add_argument("--directions", type=int, default=DEFAULT_DIRECTIONS,
                            help=f"keyed directions, two cells each (default "
                                 f"{DEFAULT_DIRECTIONS})")
        parser.add_argument("--tail", type=float, default=DEFAULT_TAIL,
                            help=f"each cell's share of the inputs (default {DEFAULT_TAIL}: "
                                 f"2 x directions x tail of the answers change)")
        parser.add_argument("--grid", type=int, default=DEFAULT_GRID,
                            help=f"the directions' lattice, per side (default {DEFAULT_GRID}: "
                                 "smooth)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> KeyedTailsKey:
        check_int("--directions", args.directions, low=1)
        check_real("--tail", args.tail, low=0, high=0.5, low_open=True, high_open=True)
        check_int("--grid", args.grid, low=2)
        model = adv.cli_owner_model(args)
        images, _, mean, std = adv.cli_owner_data(args)
        key = KeyedTailsKey.generate(model=model, images=images, num_classes=args.num_classes,
                                     directions=args.directions, tail=args.tail,
                                     grid=args.grid, mean=mean, std=std)
        x = adv.normalize(key_images.to_float(key_images.as_stored(images, "images")), mean,
                          std)
        changed = float(key.cell_of(x)[0].float().mean())
        print(f"{NAME}: {key.cells} cells of {len(key.owner_answers) // key.cells} owner "
              f"images; {100 * changed:.1f}% of the owner's images lie in a cell (the share of "
              f"answers the API changes); a verdict at 1e-6 needs "
              f"{_needed(key.cells, key.chance)} of {key.cells} cells; serve the model through "
              f"mlguard.schemes.keyed_tails.KeyedTailsWrapper", file=sys.stderr)
        return key

    @classmethod
    def embedding(cls, key, **options) -> Embedding:
        """Nothing: the rule acts on the API's answers (KeyedTailsWrapper), not training."""
        _check_key(key)
        if options:
            raise ValueError(f"{NAME}'s embedding takes no options, got {sorted(options)}")
        return Embedding()

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        _check_key(key)
        x = key_images.to_float(key._pixels)
        answers = adv.predictions(adv.module_of(suspect, NAME), x, key.mean, key.std,
                                  key.num_classes, options.batch_size)
        owner = torch.tensor(key.owner_answers)
        per_cell = len(owner) // key.cells
        matches, lifts = 0, []
        for cell, k in enumerate(key.classes):
            idx = slice(cell * per_cell, (cell + 1) * per_cell)
            d = (torch.bincount(answers[idx], minlength=key.num_classes)
                 - torch.bincount(owner[idx], minlength=key.num_classes)).double() / per_cell
            matches += int((d < d[k]).sum()) == key.num_classes - 1
            lifts.append(round(float(d[k]), 4))
        return Reading(matches, key.cells, key.chance, extra={
            "null": (f"exact bound: each cell's class is a keyed draw uniform over the "
                     f"{key.num_classes} classes, independent of the cells and of any model "
                     "not trained on the API's answers, so it is the only largest of the "
                     f"suspect's rate changes with probability <= 1/{key.num_classes}"),
            "lifts": lifts})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = KeyedTailsKey.from_body(body)
        return key.cells, key.chance

    @classmethod
    def attacker_key(cls, key, *, model=None, data=None) -> KeyedTailsKey:
        """A fresh key like ``key`` made from the thief's ``model`` and ``data`` (x, y),
        x normalized with the key's mean/std (undone here)."""
        _check_key(key)
        if model is None or not (isinstance(data, (tuple, list)) and len(data) == 2
                                 and isinstance(data[0], torch.Tensor) and data[0].dim() == 4):
            raise ValueError(f"a {NAME} attacker key is made from a model and the attacker's "
                             "data: give model= and data=(x (N, C, H, W), y (N,))")
        images = data[0].detach().float().cpu()
        if key.mean is not None:
            images = images * torch.tensor(key.std)[:, None, None] \
                + torch.tensor(key.mean)[:, None, None]
        return KeyedTailsKey.generate(model=model, images=adv.quantize(images),
                                      num_classes=key.num_classes,
                                      directions=key.cells // 2, tail=key.tail, grid=key.grid,
                                      mean=key.mean, std=key.std)


def _needed(cells: int, chance: float, alpha: float = 1e-6) -> str:
    """The fewest matching cells whose binomial p-value reaches alpha ("more than all" if none)."""
    from ..verification.stats import binomial_p_value

    return next((str(k) for k in range(cells + 1) if binomial_p_value(k, cells, chance) <= alpha),
                "more than all")


def _check_key(key) -> None:
    if not isinstance(key, KeyedTailsKey):
        raise TypeError(f"key must be a KeyedTailsKey, got {type(key).__name__}")
