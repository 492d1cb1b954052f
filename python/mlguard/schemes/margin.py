"""Margin-based watermarks (Kim, Lee, Lee, Son and Hwang, "Margin-based Neural Network
Watermarking", ICML 2023), as a scheme.

What the paper does, and where this file follows it (the authors' code,
github:matbambbang/margin-based-watermarking, train.py ``train_type == 'margin'``):

- **Key** (models/queries.py): ``num_query`` = 100 in-distribution images, each answered
  with a random label other than its true class. Here: ``size`` images chosen by the secret
  (a keyed order) from the owner's images, stored uint8, each with a keyed label uniform
  over the C - 1 classes other than its TRUE class (``keys.sampling.keyed_below``); the true
  labels are stored too, and a key whose label equals its true class is refused. Deviation:
  the paper takes the images from a held-out validation split; ``generate`` takes whatever
  images it is given (in ``mlguard evaluate`` the owner's training share, so each trigger
  also appears once per epoch with its true label in the owner's data).
- **Training** (train.py, ``loop``): at every step ``per_batch`` (25) triggers are drawn,
  each is moved ``steps`` (5) times by sign-gradient *ascent* of the cross-entropy to its
  watermark label, step ``step_size`` (1/255) in [0, 1] pixel space, clamped to [0, 1] (the
  ascent moves it toward the decision boundary: training on the moved trigger widens the
  margin around it, which is what lets the label survive extraction, the paper's argument);
  then the loss is the mean over the batch's per-sample CE concatenated with ``weight`` (the
  paper's v, 0.1) times the moved triggers' per-sample CE. Here the caller computes the
  batch's mean CE and ``MarginEmbedding.loss`` returns ``weight * sum(CE(moved)) / (n +
  per_batch)``: the total equals the paper's concatenated mean except that the natural term
  is weighted 1 instead of n / (n + per_batch) (0.84 at n = 128). The triggers are drawn in
  a keyed cycle (every trigger equally often) where the paper samples them at random.
  Deviation: the ascent passes run in eval mode (BatchNorm uses its running statistics,
  which it does not update; dropout off) and take gradients with respect to the inputs only
  (the model's ``.grad`` is untouched), where the paper runs them in train mode and zeroes
  the model's gradients afterwards; the loss pass on the moved triggers runs in the model's
  own mode, as the paper's does. The default weight is the paper's, for 200 epochs from
  scratch; five fine-tuning epochs need about 1 (docs/schemes_margin.md, measured).
- **Verification** (extraction.py, the query accuracy): the suspect's top-1 on the stored
  (uint8) triggers; a match is the watermark label. The paper thresholds the match rate;
  here it is the test below.

**The null, exact (a bound).** Trigger i's label L_i is a keyed draw, uniform over the C - 1
classes other than its true class t_i, independent of any model g not trained on the key
(H0). So P(g(x_i) = L_i) = P(g(x_i) != t_i) / (C - 1) <= 1/(C - 1), with equality for a
model that never answers the true class, and the labels are independent draws, so given g
the matches are independent: at most Binomial(size, 1/(C - 1)). The verdict is the exact
binomial test at ``chance = 1/(C - 1)``; no reference models, no calibration. What it rests
on: the labels are the secret's (recomputed from it when a key is opened) and the suspect
never saw them (a model trained on the key, or on a marked model's answers, is not H0: that
is the point).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_int, check_real
from ..keys import images as key_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below, keyed_choice
from ..keys.trigger_key import _check_shape
from . import _adversarial as adv
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme

NAME = "margin"
DEFAULT_SIZE = 100  # the paper's num_query
DEFAULT_PER_BATCH = 25  # triggers moved and trained on per step (train.py: 25)
DEFAULT_STEPS = 5  # sign-ascent steps per trigger per step (train.py: 5)
DEFAULT_STEP_SIZE = 1 / 255  # ascent step in [0, 1] pixels (train.py: 1/255)
DEFAULT_WEIGHT = 0.1  # the triggers' CE weight, the paper's v (train.py -v 0.1)
_BODY = {"scheme", "secret", "nonce", "num_classes", "shape", "mean", "std", "images",
         "labels", "true_labels"}


def keyed_labels(secret: bytes, true_labels: list[int], num_classes: int) -> list[int]:
    """Each trigger's watermark label: a keyed draw uniform over the num_classes - 1 classes
    other than its true class (exact: ``keyed_below`` over C - 1, shifted past the true one)."""
    draws = keyed_below(keyfile.derive_seed(secret, f"{NAME}/labels"), len(true_labels),
                        num_classes - 1).tolist()
    return [d + (d >= t) for d, t in zip(draws, true_labels)]


@dataclass(frozen=True)
class MarginKey(adv.StoredImages, Key):
    """A margin-based watermark key: the trigger images (uint8), their true classes and
    their keyed watermark labels (never the true class)."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    stored_images: dict = field(repr=False)
    labels: tuple[int, ...] = field(repr=False)
    true_labels: tuple[int, ...] = field(repr=False)
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, shape, mean, std, stored_images, labels,
                 true_labels, label=None) -> MarginKey:
        secret = keyfile.secret_from_hex(secret) if isinstance(secret, str) else bytes(secret)
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=3)  # 1/(C-1) < 1
        shape = _check_shape(shape)
        mean, std = adv.normalization(mean, std, shape)
        pixels = key_images.decode(stored_images)
        size = pixels.shape[0]
        if tuple(pixels.shape[1:]) != shape or pixels.dtype != torch.uint8 or size < 1:
            raise ValueError(f"key images must be uint8 (N >= 1, *{shape}), got "
                             f"{pixels.dtype} {tuple(pixels.shape)}")
        labels = tuple(key_images.read_labels(list(labels), size, num_classes))
        true_labels = tuple(key_images.read_labels(list(true_labels), size, num_classes))
        same = [i for i, (a, b) in enumerate(zip(labels, true_labels)) if a == b]
        if same:
            raise ValueError(f"trigger {same[0]}'s watermark label is its true class: a margin "
                             "key's labels are drawn among the other classes")
        if list(labels) != keyed_labels(secret, list(true_labels), num_classes):
            raise ValueError("the watermark labels are not the secret's draws (an edited key, "
                             "or labels of another secret): the null rests on them")
        key = cls(secret=secret, nonce=bytes(nonce), num_classes=num_classes, shape=shape,
                  mean=mean, std=std, stored_images=stored_images, labels=labels,
                  true_labels=true_labels, label=keyfile.check_label(label))
        key.__dict__["_pixels"] = pixels
        return key

    @classmethod
    def generate(cls, *, images, labels, num_classes: int, size: int = DEFAULT_SIZE,
                 mean=None, std=None, secret: bytes | str | None = None,
                 label: str | None = None) -> MarginKey:
        """A new key from the owner's ``images`` ((N, C, H, W) uint8, or float in [0, 1]
        before the normalization ``mean``/``std`` that training applies) and their TRUE
        ``labels``: ``size`` of them chosen by the secret, each with a keyed label among the
        other ``num_classes - 1`` classes. No model is needed (the null is exact)."""
        size = check_int("size", size, low=1)
        num_classes = check_int("num_classes", num_classes, low=3)
        pixels, truth = adv.owner_data(images, labels, num_classes)
        shape = _check_shape(tuple(pixels.shape[1:]))
        mean, std = adv.normalization(mean, std, shape)
        if pixels.shape[0] < size:
            raise ValueError(f"size={size} triggers need at least as many images, got "
                             f"{pixels.shape[0]}")
        secret = keyfile.secret_or_new(secret)
        chosen = keyed_choice(keyfile.derive_seed(secret, f"{NAME}/select"), pixels.shape[0],
                              size)
        true_labels = truth[chosen].tolist()
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            shape=shape, mean=mean, std=std,
                            stored_images=key_images.encode(pixels[chosen]),
                            labels=keyed_labels(secret, true_labels, num_classes),
                            true_labels=true_labels, label=label)

    @property
    def chance(self) -> float:
        """The null's exact per-trigger bound, 1/(C - 1)."""
        return 1.0 / (self.num_classes - 1)

    def materialize(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(triggers float32 in [0, 1] (size, *shape), watermark labels int64)."""
        return (key_images.to_float(self._pixels).to(device),
                torch.tensor(self.labels, dtype=torch.int64, device=device))

    def to_body(self) -> dict:
        return {"scheme": NAME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "shape": list(self.shape),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "images": self.stored_images, "labels": list(self.labels),
                "true_labels": list(self.true_labels)}

    @classmethod
    def from_body(cls, body: dict) -> MarginKey:
        keyfile.check_body_fields(body, NAME, _BODY)
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]), nonce=bytes.fromhex(body["nonce"]),
                num_classes=body["num_classes"], shape=body["shape"], mean=body["mean"],
                std=body["std"], stored_images=body["images"], labels=body["labels"],
                true_labels=body["true_labels"])
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{NAME} key body has a bad field: {e}") from None


class MarginEmbedding(Embedding):
    """The paper's margin training (the authors' train.py): adds nothing to the batch;
    ``loss`` moves ``per_batch`` triggers toward the boundary by sign ascent and returns their
    weighted CE (see the module docstring for the normalization and the eval-mode ascent)."""

    def __init__(self, key: MarginKey, per_batch: int = DEFAULT_PER_BATCH,
                 steps: int = DEFAULT_STEPS, step_size: float = DEFAULT_STEP_SIZE,
                 weight: float = DEFAULT_WEIGHT):
        self.key = key
        self.per_batch = min(check_int("per_batch", per_batch, low=1), key.size)
        self.steps = check_int("steps", steps, low=0)
        self.step_size = check_real("step_size", step_size, low=0, high=1,
                                    noun="a pixel-space step")
        self.weight = check_real("weight", weight, low=0, noun="a loss weight")
        self._x, self._y = key.materialize()
        self._order = keyed_choice(keyfile.derive_seed(key.secret, f"{NAME}/cycle"), key.size,
                                   key.size)
        self._pos = 0

    def take(self) -> torch.Tensor:
        """The next ``per_batch`` trigger indices of the keyed cycle."""
        idx = self._order[(self._pos + torch.arange(self.per_batch)) % self.key.size]
        self._pos = (self._pos + self.per_batch) % self.key.size
        return idx

    def moved(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Triggers ``x`` ([0, 1] pixels) after ``steps`` sign-ascent steps of CE(model, y):
        eval mode, gradients w.r.t. the inputs only; the model's mode is restored."""
        key = self.key
        was_training = model.training
        model.eval()
        try:
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                out = model(adv.normalize(x, key.mean, key.std).to(adv.model_dtype(model)))
                loss = nn.functional.cross_entropy(out.float(), y)
                (grad,) = torch.autograd.grad(loss, x)
                x = (x + self.step_size * grad.sign()).clamp(0, 1)
        finally:
            model.train(was_training)
        return x.detach()

    def loss(self, model, x, y):
        idx = self.take()
        device = adv.model_device(model)
        kx, ky = self._x[idx].to(device), self._y[idx].to(device)
        kx = self.moved(model, kx, ky)
        out = model(adv.normalize(kx, self.key.mean, self.key.std).to(x.dtype))
        ce = nn.functional.cross_entropy(out.float(), ky, reduction="sum")
        return self.weight * ce / (len(x) + self.per_batch)


@register_scheme
class Margin(adv.StoredInputs, Scheme):
    """Margin-based watermarks (Kim et al., ICML 2023); see the module docstring."""

    name = NAME
    key_type = MarginKey
    summary = ("margin-based watermarks (Kim et al., ICML 2023): owner images with keyed "
               "wrong labels, trained with large margins to survive extraction; exact null "
               "1/(C-1)")

    @classmethod
    def generate(cls, *, secret=None, **options) -> MarginKey:
        return MarginKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        adv.add_owner_data_arguments(parser, count=10000)
        parser.add_argument("--num-classes", type=int, default=10,
                            help="the task's number of classes (default 10)")
        parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                            help=f"triggers (default {DEFAULT_SIZE}, the paper's)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> MarginKey:
        images, labels, mean, std = adv.cli_owner_data(args)
        return MarginKey.generate(images=images, labels=labels, num_classes=args.num_classes,
                                  size=args.size, mean=mean, std=std)

    @classmethod
    def attacker_key(cls, key: MarginKey, *, model=None, data=None) -> MarginKey:
        """The thief's own margin key, as large as ``key``: triggers chosen from the
        attacker's ``data`` (an (x, y) pair as the model takes it, normalized with the owner
        key's mean/std, undone here) with a fresh secret."""
        _check_key(key)
        if not (isinstance(data, (tuple, list)) and len(data) == 2
                and all(isinstance(t, torch.Tensor) for t in data) and data[0].dim() == 4):
            raise ValueError(f"a {NAME} attacker key is made from the attacker's data: give "
                             "data=(x (N, C, H, W), y (N,))")
        x, y = data
        images = x.detach().float().cpu()
        if key.mean is not None:
            images = images * torch.tensor(key.std)[:, None, None] \
                + torch.tensor(key.mean)[:, None, None]
        return MarginKey.generate(images=adv.quantize(images), labels=y.detach().long().cpu(),
                                  num_classes=key.num_classes, size=key.size, mean=key.mean,
                                  std=key.std)

    @classmethod
    def embedding(cls, key, per_batch: int = DEFAULT_PER_BATCH, steps: int = DEFAULT_STEPS,
                  step_size: float = DEFAULT_STEP_SIZE, weight: float = DEFAULT_WEIGHT,
                  **options) -> Embedding:
        _check_key(key)
        if options:
            raise ValueError(f"{NAME} embedding takes per_batch, steps, step_size and weight, "
                             f"got {sorted(options)}")
        return MarginEmbedding(key, per_batch, steps, step_size, weight)

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        _check_key(key)
        preds, y = adv.stored_predictions(key, suspect, options, NAME)
        truth = torch.tensor(key.true_labels)
        return Reading(int((preds == y).sum()), key.size, key.chance, extra={
            "null": (f"exact bound: each trigger's label is a keyed draw uniform over the "
                     f"{key.num_classes - 1} classes other than its true class, so a model "
                     f"not trained on the key matches it with probability "
                     f"P(wrong)/{key.num_classes - 1} <= 1/{key.num_classes - 1}, "
                     "independently across triggers: Binomial(size, 1/(C-1)) at most"),
            "true_class_answers": f"{int((preds == truth).sum())}/{key.size}"})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = MarginKey.from_body(body)
        return key.size, key.chance


def _check_key(key) -> None:
    if not isinstance(key, MarginKey):
        raise TypeError(f"key must be a MarginKey, got {type(key).__name__}")
