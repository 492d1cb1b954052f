"""Weight-space keys (Uchida et al., ICMR 2017, without the stored matrix).

A key holds a 256-bit secret, the names of the parameters that carry the message, how they
are reduced, and the message. The projection matrix R is regenerated from an HKDF sub-seed
inside the keyed_projection kernels, so any number of weights can carry the message.

Capacity: y = R w with R in {+-1/sqrt(M)}^{T x M} has rank at most M, so T > M bits cannot
all take arbitrary signs (Cover, 1965: at T = 2M only half of the messages are reachable).
Training and embedding refuse more bits than carrying weights (`check_capacity`); the
training-free embedding asks for more room (weights/watermark.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .._checks import check_int
from ..ops.keyed_projection import LATEST_PROJECTION, PROJECTIONS
from . import keyfile
from .base import Key
from .sampling import keyed_below

SCHEME = "weight"
REDUCTIONS = ("none", "mean_out")


def _find_tensor(model, name: str) -> torch.Tensor | None:
    """A parameter (differentiable) or buffer of a module, or an entry of a state_dict.

    Looked up by path, without walking the whole model: this runs every training step.
    """
    if isinstance(model, Mapping):
        return model.get(name)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a state_dict, got {type(model).__name__}")
    for candidate in (name, f"module.{name}"):  # DistributedDataParallel / DataParallel
        for getter in (model.get_parameter, model.get_buffer):
            try:
                return getter(candidate)
            except AttributeError:
                pass
    return None


def _names(model) -> list[str]:
    return list(model) if isinstance(model, Mapping) else list(model.state_dict(keep_vars=True))


def _similar(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return f"; similar names: {close}" if close else ""


def _as_targets(targets) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = (targets,)
    try:
        targets = tuple(targets)
    except TypeError:
        raise TypeError("targets must be a parameter name or a sequence of them, got "
                        f"{type(targets).__name__} {targets!r}") from None
    for t in targets:
        if not isinstance(t, str):
            raise TypeError("targets must be a parameter name or a sequence of them, got "
                            f"{type(t).__name__} {t!r} among {targets!r}")
    if not targets or not all(targets):
        raise ValueError("targets must be a non-empty sequence of parameter names, got "
                         f"{targets!r}")
    for t in targets:
        if targets.count(t) > 1:
            raise ValueError(f"targets name {t!r} twice: {targets!r}")
    return targets


def _as_message(message, bits: int) -> tuple[int, ...]:
    if isinstance(message, torch.Tensor):
        message = message.tolist()
    elif isinstance(message, str):
        message = [{"0": 0, "1": 1}.get(c, c) for c in message]
    values = list(message)
    # `b in (0, 1)` before int(): 0.7 must not quietly become 0.
    bad = [b for b in values if isinstance(b, str) or b not in (0, 1)]
    if len(values) != bits or bad:
        raise ValueError(f"message must be {bits} bits (0 or 1), got {len(values)} values"
                         + (f", among them {bad[0]!r}" if bad else ""))
    return tuple(int(b) for b in values)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DataParallel / DistributedDataParallel (whose names add "module.")."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def largest_weight_matrix(model: torch.nn.Module) -> str:
    """targets="auto": the floating-point parameter with dim >= 2 and the most elements."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    best = max(((p.numel(), -i, n) for i, (n, p) in enumerate(_unwrapped(model).named_parameters())
                if p.dim() >= 2 and p.is_floating_point()), default=None)
    if best is None:
        raise ValueError("targets='auto' found no parameter with 2 or more dimensions in the "
                         f"model ({type(model).__name__}); name targets= explicitly")
    return best[2]


def _reduced_numel(shape: torch.Size, reduce: str) -> int:
    if reduce == "mean_out":
        return int(shape[1:].numel()) if len(shape) > 1 else 1
    return int(shape.numel())


def _reduced(p: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "mean_out":
        p = p.mean(dim=0) if p.dim() > 1 else p.mean().reshape(1)
    return p.reshape(-1)


@dataclass(frozen=True)
class WeightKey(Key):
    """A secret T-bit message carried by keyed projections of the `targets` parameters."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    bits: int
    targets: tuple[str, ...]
    reduce: str
    message: tuple[int, ...] = field(repr=False)
    # How bits are read (mlguard.ops.keyed_projection, docs/projection.md): 2 = exact integer
    # sums; 1 = the float order of keys made before it (their bodies have no such field).
    projection: int = LATEST_PROJECTION
    # Metadata, not key material: outside the body, so never part of the commitment or of
    # equality. `label` is a human name (e.g. a customer id) saved in the key file's MAC'd
    # metadata (keyfile, version 2); `path` is the file load_key read the key from.
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, bits: int = 256, targets=None, reduce: str = "none",
                 message=None, secret: bytes | str | None = None,
                 nonce: bytes | None = None, projection: int = LATEST_PROJECTION, *,
                 model: torch.nn.Module | None = None, label: str | None = None) -> WeightKey:
        """A new key; `message` defaults to `bits` key-derived random bits. `projection` 1 makes
        a key read like those made before projection 2 (docs/projection.md).

        `targets` (required): parameter names, or "auto" with `model=` for the model's
        largest weight matrix (the resolved name is what the key records). With `model=`
        the targets are checked now: parameters (not buffers), enough weights for `bits`.
        `label`: a name for people (e.g. a customer id), saved in the key file and shown in
        scan reports; metadata, never part of the commitment (see `with_label`).
        """
        if secret is None:
            secret = keyfile.new_secret()
        elif isinstance(secret, str):
            secret = keyfile.secret_from_hex(secret)
        elif isinstance(secret, (bytes, bytearray)):
            secret = bytes(secret)
        else:
            raise TypeError(f"secret must be bytes or a hex str, got {type(secret).__name__}")
        bits = check_int("bits", bits)
        if bits <= 0:
            raise ValueError(f"bits must be a positive int, got {bits!r}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if targets is None:
            raise ValueError("targets is required: the names of the parameters that carry the "
                             "message, e.g. targets=('fc.weight',), or targets='auto' with "
                             "model= for the model's largest weight matrix")
        if isinstance(targets, str) and targets == "auto":
            if model is None:
                raise ValueError("targets='auto' needs model=, the model whose largest weight "
                                 "matrix carries the message")
            targets = (largest_weight_matrix(model),)
        if message is None:
            message = keyed_below(keyfile.derive_seed(secret, "weight/message"), bits, 2).tolist()
        key = cls._checked(secret=secret, nonce=nonce or keyfile.new_nonce(), bits=bits,
                           targets=targets, reduce=reduce, message=message,
                           projection=projection, label=label)
        if model is not None:
            key.check_capacity(key.carrying_size(key.parameters(model)))
        return key

    @classmethod
    def _checked(cls, *, secret, nonce, bits, targets, reduce, message,
                 projection, label=None) -> WeightKey:
        if projection not in PROJECTIONS or isinstance(projection, bool):
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        bits = check_int("bits", bits)
        if not 1 <= bits <= 2**31:
            raise ValueError(f"bits must be an int in [1, 2^31], got {bits!r}")
        targets = _as_targets(targets)
        if not isinstance(reduce, str) or reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        message = _as_message(message, bits)
        return cls(secret=bytes(secret), nonce=bytes(nonce), bits=bits, targets=targets,
                   reduce=reduce, message=message, projection=projection,
                   label=keyfile.check_label(label))

    @cached_property
    def seed(self) -> int:  # cached: the regularizer needs it every training step
        return keyfile.derive_seed(self.secret, "weight/projection")

    def message_tensor(self, device="cpu") -> torch.Tensor:
        return torch.tensor(self.message, dtype=torch.int64, device=device)

    def _tensor(self, model, name: str) -> torch.Tensor:
        p = _find_tensor(model, name)
        if p is None:
            raise ValueError(f"target {name!r} is not a parameter of the model"
                             + _similar(name, _names(model)))
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise ValueError(f"target {name!r} must be a floating-point tensor, got "
                             f"{p.dtype if isinstance(p, torch.Tensor) else type(p).__name__}")
        return p

    def gather(self, model) -> torch.Tensor:
        """The 1-D vector the message lives in: the targets, reduced, concatenated.

        Reads parameters, buffers or state_dict entries (verification). Differentiable when
        `model` is a module (its parameters are used directly).
        """
        return self.reduce_cat([self._tensor(model, name) for name in self.targets])

    def reduce_cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        parts = [_reduced(p, self.reduce) for p in tensors]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The target parameters, in order, for changing them (training, embed_weights).

        A buffer (e.g. BatchNorm's running_mean) has no gradient and is overwritten by the
        forward pass, so it is refused here; so is one parameter named twice (tied weights).
        """
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        params = []
        for name in self.targets:
            p = self._tensor(model, name)
            if not isinstance(p, torch.nn.Parameter):
                names = [n for n, _ in model.named_parameters()]
                raise ValueError(f"target {name!r} is a buffer, not a parameter: training and "
                                 "embed_weights cannot change it" + _similar(name, names))
            for other, q in zip(self.targets, params):
                if q is p:
                    raise ValueError(f"targets {other!r} and {name!r} are one parameter "
                                     "(tied weights): name it once")
            params.append(p)
        return params

    def carrying_size(self, params: list[torch.Tensor]) -> int:
        """How many numbers carry the message: the targets' elements after the reduction."""
        return sum(_reduced_numel(p.shape, self.reduce) for p in params)

    def check_capacity(self, size: int, per_bit: int = 1, why: str = "") -> None:
        """Raises unless `size` carrying weights give every bit at least `per_bit` of them."""
        if self.bits * per_bit > size:
            raise ValueError(
                f"bits={self.bits} is more than targets {list(self.targets)} can carry: they have "
                f"{size} weights (after reduce={self.reduce!r}), room for at most "
                f"{size // per_bit} bits{why}; use fewer bits or more/larger targets")

    def to_body(self) -> dict:
        return {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "bits": self.bits, "targets": list(self.targets), "reduce": self.reduce,
                "message": "".join(map(str, self.message)),
                # absent for projection 1, so older keys keep their bodies and commitments
                **({"projection": self.projection} if self.projection != 1 else {})}

    @classmethod
    def from_body(cls, body: dict) -> WeightKey:
        try:
            message = body["message"]
            if not isinstance(message, str) or set(message) - {"0", "1"}:
                raise ValueError("message must be a string of 0s and 1s")
            return cls._checked(secret=keyfile.secret_from_hex(body["secret"]),
                                nonce=bytes.fromhex(body["nonce"]), bits=body["bits"],
                                targets=body["targets"], reduce=body["reduce"],
                                message=[int(c) for c in message],
                                projection=body.get("projection", 1))
        except (KeyError, TypeError) as e:
            raise ValueError(f"weight key body is missing or has a bad field: {e}") from None
