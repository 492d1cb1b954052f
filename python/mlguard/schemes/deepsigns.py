"""DeepSigns: a watermark in the distribution of one layer's activations (white-box).

Rouhani, Chen and Koushanfar, "DeepSigns: An End-to-End Watermarking Framework for Ownership
Protection of Deep Neural Networks", ASPLOS 2019 (arXiv:1804.00750), the white-box
watermark of hidden layers. The paper's parts, by name (its section and equation numbers
could not be checked against the paper's text here):

- **watermark keys**: a secret target class s, secret key inputs X_key (a small fraction of
  the training images of class s; stored in the key here, so the key file alone
  regenerates them), a secret projection matrix A and a secret T-bit message b. A is
  mlguard's keyed +-1/sqrt(M) projection (ops.keyed_projection) regenerated from an HKDF
  sub-seed, never stored (the paper draws A Gaussian and keeps it); b is drawn from the
  secret and checked on load.
- **embedding**: training adds lambda_2 * loss_2, the binary cross-entropy between
  sigmoid(mu_s A) and b, where mu_s is the class's Gaussian centre (here the mean
  activation of the chosen layer over the key inputs), plus lambda_1 times loss_1's pull
  term, the key inputs' squared distance to mu_s. loss_1's push-apart half between the
  centres of different classes needs every class's centre, which this one-class key does
  not hold, and is left out.
- **extraction**: run the key inputs, average the layer's activations, project and
  threshold (sigmoid at 1/2, here the sign): T bits, compared with b (the paper reports
  the bit error rate). The projection is read with the exact integer sums
  (keyed_projection_sums), so the bits of given activations do not depend on the device.

**The null is exact.** b is drawn uniformly from the secret (HKDF purpose
"deepsigns/message", independent of the projection's and of the key inputs' sub-keys) and
no body with another message is accepted. For a model not derived from the owner's, the
bits it gives are a function of the model, the key inputs and A, all independent of b, so
each bit equals b's with probability exactly 1/2, independently: matches ~ Binomial(T, 1/2),
whatever the activations' distribution (ties at 0 read as 0 and still match with 1/2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

from .._checks import check_int, check_real
from ..keys import images as stored_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below, keyed_choice
from ..ops import keyed_projection
from ..ops.keyed_projection import read_bits
from ._activations import layer_activations
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme

SCHEME = "deepsigns"
NULL = ("exact: the message is uniform from the secret and independent of the model, the key "
        "inputs and the projection, so each bit matches with probability 1/2")


def _message(secret: bytes, bits: int) -> tuple[int, ...]:
    return tuple(keyed_below(keyfile.derive_seed(secret, "deepsigns/message"), bits, 2).tolist())


def _normalization(mean, std, channels: int):
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std go together: give both or neither, got mean={mean!r}, "
                         f"std={std!r}")
    if mean is None:
        return None, None
    mean = tuple(check_real("mean", m) for m in mean)
    std = tuple(check_real("std", s, low=0, low_open=True) for s in std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need one value per channel ({channels}), got "
                         f"{len(mean)} and {len(std)}")
    return mean, std


@dataclass(frozen=True)
class DeepSignsKey(Key):
    """Target class, key inputs (stored), layer, T secret bits; see the module docstring."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    layer: str
    bits: int
    num_classes: int
    target_class: int
    inputs: torch.Tensor = field(repr=False, compare=False)  # uint8/float (N, C, H, W)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, images: torch.Tensor, labels: torch.Tensor, *, layer: str,
                 num_classes: int, bits: int = 32, count: int = 50, target_class=None,
                 mean=None, std=None, secret: bytes | str | None = None,
                 label: str | None = None) -> DeepSignsKey:
        """A new key: `count` key inputs drawn (from the secret) among `images` of the
        target class (drawn from the secret unless given). `images`: the owner's training
        images in [0, 1] or uint8 (N, C, H, W), `labels` their classes; `mean`/`std` the
        per-channel normalization the model is trained with; `layer` the module whose
        output carries the bits (its output should have at least `bits` features)."""
        secret = keyfile.secret_or_new(secret)
        num_classes = check_int("num_classes", num_classes, low=2)
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or \
                labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError("labels must be a 1-D integer tensor, one class per image")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with one image per label "
                             f"({len(labels)}), got shape {tuple(images.shape)}")
        if target_class is None:
            target_class = int(keyed_below(keyfile.derive_seed(secret, "deepsigns/class"), 1,
                                           num_classes)[0])
        target_class = check_int("target_class", target_class, low=0, high=num_classes - 1)
        count = check_int("count", count, low=1)
        of_class = (labels == target_class).nonzero().flatten()
        if len(of_class) < count:
            raise ValueError(f"count={count} key inputs of class {target_class} asked for, the "
                             f"images hold {len(of_class)} of that class")
        pick = of_class[keyed_choice(keyfile.derive_seed(secret, "deepsigns/inputs"),
                                     len(of_class), count)]
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), layer=layer, bits=bits,
                            num_classes=num_classes, target_class=target_class,
                            inputs=stored_images.as_stored(images[pick], "images"),
                            mean=mean, std=std, label=label)

    @classmethod
    def _checked(cls, *, secret, nonce, layer, bits, num_classes, target_class, inputs,
                 mean, std, label=None) -> DeepSignsKey:
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a module name (e.g. '8'), got {layer!r}")
        bits = check_int("bits", bits, low=1, high=2**20)
        num_classes = check_int("num_classes", num_classes, low=2)
        target_class = check_int("target_class", target_class, low=0, high=num_classes - 1)
        if inputs.dim() != 4 or len(inputs) == 0:
            raise ValueError(f"key inputs must be a non-empty (N, C, H, W) batch, got shape "
                             f"{tuple(inputs.shape)}")
        mean, std = _normalization(mean, std, inputs.shape[1])
        return cls(secret=bytes(secret), nonce=bytes(nonce), layer=layer, bits=bits,
                   num_classes=num_classes, target_class=target_class, inputs=inputs,
                   mean=mean, std=std, label=keyfile.check_label(label))

    @cached_property
    def seed(self) -> int:
        return keyfile.derive_seed(self.secret, "deepsigns/projection")

    @cached_property
    def message(self) -> tuple[int, ...]:
        return _message(self.secret, self.bits)

    def model_inputs(self, device="cpu") -> torch.Tensor:
        """The key inputs as the model sees them: [0, 1], then (x - mean) / std."""
        x = stored_images.to_float(self.inputs).to(device)
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=device)[:, None, None]
        return (x - mean) / std

    def to_body(self) -> dict:
        return {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "layer": self.layer, "bits": self.bits, "num_classes": self.num_classes,
                "target_class": self.target_class, "message": "".join(map(str, self.message)),
                "inputs": stored_images.encode(self.inputs),
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None}

    @classmethod
    def from_body(cls, body: dict) -> DeepSignsKey:
        try:
            if body["scheme"] != SCHEME:
                raise ValueError(f"scheme must be {SCHEME!r}, got {body['scheme']!r}")
            secret = keyfile.secret_from_hex(body["secret"])
            key = cls._checked(secret=secret, nonce=bytes.fromhex(body["nonce"]),
                               layer=body["layer"], bits=body["bits"],
                               num_classes=body["num_classes"],
                               target_class=body["target_class"],
                               inputs=stored_images.decode(body["inputs"]),
                               mean=body["mean"], std=body["std"])
            if body["message"] != "".join(map(str, key.message)):
                raise ValueError("message is not the one the secret gives (the null needs "
                                 "the secret's uniform bits): the body was altered")
            return key
        except (KeyError, TypeError) as e:
            raise ValueError(f"deepsigns key body is missing or has a bad field: {e}") from None


def centre(model: torch.nn.Module, key: DeepSignsKey, batch_size: int | None = None,
           device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations (N, M), their mean mu_s (M,)) of the key's layer over the key inputs."""
    device = device if device is not None else next(model.parameters()).device
    acts = layer_activations(model, key.layer, key.model_inputs(device), batch_size)
    return acts, acts.mean(0)


def read_message(model: torch.nn.Module, key: DeepSignsKey, batch_size: int = 256,
                 device=None) -> torch.Tensor:
    """The T bits the model gives (int64): sign of the exact keyed projection of mu_s.
    The model is run in eval mode (and put back in its mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, mu = centre(model, key, batch_size, device)
    finally:
        model.train(was_training)
    if not bool(mu.isfinite().all()):
        raise ValueError(f"layer {key.layer!r} gives non-finite activations on the key inputs")
    seeds = torch.tensor([key.seed], device=mu.device)
    return read_bits(mu.double().reshape(1, -1), seeds, key.bits)[0, 0].long()


class DeepSignsEmbedding(Embedding):
    """loss = strength * BCE(A mu_s / rms(mu_s), b) + centre_strength * pull(X_key, mu_s).

    The logits are in units of mu_s's RMS (a random model's projections are then about
    N(0, 1)), so `strength` means the same for any layer width; the pull term is the key
    inputs' mean squared distance to mu_s over mu_s's squared norm (scale-free too)."""

    def __init__(self, key: DeepSignsKey, strength: float = 0.3, centre_strength: float = 0.01):
        if not isinstance(key, DeepSignsKey):
            raise TypeError(f"key must be a DeepSignsKey, got {type(key).__name__}")
        self.key = key
        self.strength = check_real("strength", strength, low=0, low_open=True)
        self.centre_strength = check_real("centre_strength", centre_strength, low=0)
        self._target = torch.tensor(key.message, dtype=torch.float32)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        acts, mu = centre(model, self.key, device=x.device)
        if mu.numel() < self.key.bits:
            raise ValueError(f"layer {self.key.layer!r} has {mu.numel()} features, fewer than "
                             f"bits={self.key.bits}: its mean cannot take every message")
        proj = keyed_projection(mu, self.key.seed, self.key.bits)
        rms = mu.detach().float().pow(2).mean().sqrt().clamp_min(1e-12)
        bits = F.binary_cross_entropy_with_logits(proj / rms, self._target.to(proj.device))
        pull = (acts - mu).pow(2).sum(1).mean() / mu.detach().pow(2).sum().clamp_min(1e-12)
        return self.strength * bits + self.centre_strength * pull


@register_scheme
class DeepSigns(Scheme):
    name = SCHEME
    key_type = DeepSignsKey
    summary = ("DeepSigns (Rouhani et al., ASPLOS 2019): T secret bits in the projected mean "
               "activation of one layer over secret key inputs of a secret class (white-box)")
    needs_module = True

    @classmethod
    def generate(cls, *, secret=None, **options) -> DeepSignsKey:
        return DeepSignsKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--layer", required=True,
                            help="module name whose output carries the bits (e.g. 8)")
        parser.add_argument("--bits", type=int, default=32)
        parser.add_argument("--count", type=int, default=50, help="key inputs")
        parser.add_argument("--target-class", type=int, default=None)
        parser.add_argument("--dataset", choices=("fashion-mnist",), default="fashion-mnist",
                            help="the training images the key inputs are drawn from")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DeepSignsKey:
        from .. import data  # the only data set the CLI offers today

        images, labels = data.fashion_mnist("train")
        return DeepSignsKey.generate(images, labels, layer=args.layer, num_classes=10,
                                     bits=args.bits, count=args.count,
                                     target_class=args.target_class,
                                     mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD)

    @classmethod
    def embedding(cls, key, *, strength: float = 0.3,
                  centre_strength: float = 0.01) -> DeepSignsEmbedding:
        return DeepSignsEmbedding(key, strength, centre_strength)

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        if not isinstance(key, DeepSignsKey):
            raise TypeError(f"key must be a DeepSignsKey, got {type(key).__name__}")
        if suspect.module is None:
            raise ValueError("a deepsigns key reads activations: it needs the suspect's module, "
                             "not a state_dict alone")
        bits = read_message(suspect.module, key, options.batch_size, suspect.device)
        matches = int((bits.cpu() == torch.tensor(key.message)).sum())
        return Reading(matches, key.bits, 0.5,
                       {"null": NULL, "layer": key.layer, "target_class": key.target_class,
                        "key_inputs": len(key.inputs),
                        "bit_error_rate": (key.bits - matches) / key.bits})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        return DeepSignsKey.from_body(body).bits, 0.5

    # optional hooks of the interface (engineer A's additions; defaults elsewhere)

    @classmethod
    def attacker_key(cls, key: DeepSignsKey) -> DeepSignsKey:
        """A fresh key like `key` for the overwrite attack: a new secret (projection and
        message) on the same layer, class and key inputs (the attacker's own images of the
        class are not at hand here)."""
        labels = torch.full((len(key.inputs),), key.target_class, dtype=torch.int64)
        return DeepSignsKey.generate(key.inputs, labels, layer=key.layer,
                                     num_classes=key.num_classes, bits=key.bits,
                                     count=len(key.inputs), target_class=key.target_class,
                                     mean=key.mean, std=key.std)

    @classmethod
    def input_normalization(cls, key: DeepSignsKey):
        return None if key.mean is None else (tuple(key.mean), tuple(key.std))

    @classmethod
    def input_shape(cls, key: DeepSignsKey):
        return tuple(key.inputs.shape[1:])
