"""Weight-space keys (Uchida et al., ICMR 2017, without the stored matrix).

A key holds a 256-bit secret, the names of the parameters that carry the message, how they
are reduced, and the message. The projection matrix R is regenerated from an HKDF sub-seed
inside the keyed_projection kernels, so any number of weights can carry the message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..ops.keyed_projection import LATEST_PROJECTION, PROJECTIONS
from . import keyfile
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


@dataclass(frozen=True)
class WeightKey:
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

    @classmethod
    def generate(cls, bits: int = 256, targets=("layer3.0.conv1.weight",), reduce: str = "none",
                 message=None, secret: bytes | str | None = None,
                 nonce: bytes | None = None, projection: int = LATEST_PROJECTION) -> WeightKey:
        """A new key; `message` defaults to `bits` key-derived random bits. `projection` 1 makes
        a key read like those made before projection 2 (docs/projection.md)."""
        secret = keyfile.new_secret() if secret is None else (
            keyfile.secret_from_hex(secret) if isinstance(secret, str) else bytes(secret))
        if not isinstance(bits, int) or isinstance(bits, bool) or bits <= 0:
            raise ValueError(f"bits must be a positive int, got {bits!r}")
        if message is None:
            message = keyed_below(keyfile.derive_seed(secret, "weight/message"), bits, 2).tolist()
        return cls._checked(secret=secret, nonce=nonce or keyfile.new_nonce(), bits=bits,
                            targets=targets, reduce=reduce, message=message,
                            projection=projection)

    @classmethod
    def _checked(cls, *, secret, nonce, bits, targets, reduce, message,
                 projection) -> WeightKey:
        if projection not in PROJECTIONS or isinstance(projection, bool):
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 2**31:
            raise ValueError(f"bits must be an int in [1, 2^31], got {bits!r}")
        if isinstance(targets, str):
            targets = (targets,)
        targets = tuple(targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"targets must be a non-empty sequence of parameter names, got {targets!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        message = tuple(int(b) for b in (message.tolist() if isinstance(message, torch.Tensor)
                                         else message))
        if len(message) != bits or any(b not in (0, 1) for b in message):
            raise ValueError(f"message must be {bits} bits (0 or 1), got {len(message)} values")
        return cls(secret=bytes(secret), nonce=bytes(nonce), bits=bits, targets=targets,
                   reduce=reduce, message=message, projection=projection)

    @cached_property
    def seed(self) -> int:  # cached: the regularizer needs it every training step
        return keyfile.derive_seed(self.secret, "weight/projection")

    def message_tensor(self, device="cpu") -> torch.Tensor:
        return torch.tensor(self.message, dtype=torch.int64, device=device)

    def gather(self, model) -> torch.Tensor:
        """The 1-D vector the message lives in: the targets, reduced, concatenated.

        Differentiable when `model` is a module (its parameters are used directly).
        """
        parts = []
        for name in self.targets:
            p = _find_tensor(model, name)
            if p is None:
                close = [n for n in _names(model) if name.split(".")[-1] in n][:5]
                raise ValueError(f"target {name!r} is not a parameter of the model"
                                 + (f"; similar names: {close}" if close else ""))
            if not isinstance(p, torch.Tensor) or not p.is_floating_point():
                raise ValueError(f"target {name!r} must be a floating-point tensor, got "
                                 f"{p.dtype if isinstance(p, torch.Tensor) else type(p).__name__}")
            if self.reduce == "mean_out":
                p = p.mean(dim=0) if p.dim() > 1 else p.mean().reshape(1)
            parts.append(p.reshape(-1))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def commitment(self) -> str:
        return keyfile.commitment(self.to_body())

    @property
    def key_id(self) -> str:
        return self.commitment()[:16]

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

    def save(self, path: str | os.PathLike) -> None:
        """Writes the key file (mode 0600: it holds the secret). Format: mlguard.keys.keyfile."""
        keyfile.write_key_file(path, self.to_body())
