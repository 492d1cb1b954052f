"""DeepMarks: per-user fingerprints from an anti-collusion code, in the weights (white-box).

Chen, Rouhani, Fan, Huang and Koushanfar, "DeepMarks: A Secure Fingerprinting Framework for
Digital Rights Management of Deep Learning Models", ICMR 2019 (arXiv:1804.03648). The
paper's parts by name (its section numbers could not be checked against its text here):

- **fingerprint codes**: each user's code vector is a column of the bit complement of the
  incidence matrix of a (v, k, 1)-BIBD: an AND anti-collusion code (AND-ACC, Trappe et al.
  2003), for which the AND of any k - 1 or fewer code vectors is unique. The BIBD here is
  the projective plane PG(2, q), q prime: v = q^2 + q + 1 points, one line (block) of
  k = q + 1 points per user, b = v users; user u's code is 0 on the k points of its line,
  1 elsewhere. The master secret permutes points and assigns lines to users; the code is
  repeated `repeats` times for power.
- **embedding**: an Uchida-style regularizer on a projection of the
  target weights, here mlguard's keyed projection R shared by every user of the master (so
  that an average of users' weights projects to the average of their projections) with an
  MSE to per-bit targets (as WRT's implementation of DeepMarks does): users' copies are
  fine-tuned from one base model.
- **collusion resistance**: colluders average their models. The code bits are XORed with a
  secret uniform mask m (below) and embedded with asymmetric magnitudes: a 0 code bit at
  +-margin_zero, a 1 at +-margin_one (3x smaller by default). Where colluders' codes agree
  the average keeps the sign; where they differ the 0s' larger magnitude wins for up to
  margin_zero / margin_one colluders, so the read code is the AND of theirs (the AND-ACC
  model) through the mask. Decoding (the AND-ACC's): the read code's zeros are the union
  of the colluders' lines; each user is tested on the k * repeats positions of its line.

**The null is exact, through the mask.** A BIBD code is far from uniform (mostly 1s), so a
model's bits compared with a user's code would not match with chance 1/2. Every embedded
bit is code XOR m, m uniform from the master secret (HKDF purpose "deepmarks/mask",
independent of R's and of the permutation's sub-keys). For a model not derived from the
master's models its read bits b are independent of m, so the de-masked bits b XOR m are
uniform and independent: user u's reading (positions of its line that read 0) is exactly
Binomial(k * repeats, 1/2). A copy of another user's model, or an average of c users'
copies, reads 0 on at most c points of an innocent user's line (two lines meet in one
point), so innocents are not named.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .._checks import check_int, check_real
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below, keyed_choice
from ..keys.weight_key import REDUCTIONS, WeightKey, _as_targets
from ..ops import keyed_projection
from ..verification import stats
from ..weights.watermark import WeightWatermark
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme

SCHEME = "deepmarks"
NULL = ("exact: code bits are XORed with a secret uniform mask, so for a model independent "
        "of the master secret each de-masked bit of the user's line is 0 with probability 1/2")


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def projective_plane(q: int) -> np.ndarray:
    """Incidence (lines x points, bool) of PG(2, q), q prime: v = q^2+q+1 points and lines,
    q+1 points per line, two lines meeting in exactly one point (a (v, q+1, 1)-BIBD)."""
    if not _is_prime(q):
        raise ValueError(f"q must be a prime (PG(2, q) is built over the integers mod q), "
                         f"got {q!r}")
    reps = ([(1, a, b) for a in range(q) for b in range(q)] + [(0, 1, a) for a in range(q)]
            + [(0, 0, 1)])
    points = np.array(reps, dtype=np.int64)
    return (points @ points.T) % q == 0  # line l holds point p when l . p = 0 (mod q)


@dataclass(frozen=True)
class DeepMarksKey(Key):
    """User `user`'s fingerprint key of the master `secret` (every user of one master shares
    the secret: the projection R and the mask are the master's)."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    q: int
    repeats: int
    user: int
    targets: tuple[str, ...]
    reduce: str
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, *, targets, user: int = 0, q: int = 7, repeats: int = 4,
                 reduce: str = "none", secret=None, label: str | None = None) -> DeepMarksKey:
        """User `user`'s key (0 <= user < q^2+q+1) of the master `secret` (fresh if None).
        The nonce is derived from the master and the user, so each user's commitment is
        reproducible from the master secret."""
        secret = keyfile.secret_or_new(secret)
        user = check_int("user", user)
        nonce = keyfile.derive_key_bytes(secret, f"deepmarks-nonce/{user}")
        return cls._checked(secret=secret, nonce=nonce, q=q, repeats=repeats, user=user,
                            targets=targets, reduce=reduce, label=label)

    @classmethod
    def _checked(cls, *, secret, nonce, q, repeats, user, targets, reduce,
                 label=None) -> DeepMarksKey:
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        q = check_int("q", q, low=2, high=97)
        if not _is_prime(q):
            raise ValueError(f"q must be a prime (the code is PG(2, q)), got {q}")
        repeats = check_int("repeats", repeats, low=1, high=64)
        users = q * q + q + 1
        user = check_int("user", user, low=0, high=users - 1)
        if not isinstance(reduce, str) or reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        return cls(secret=bytes(secret), nonce=bytes(nonce), q=q, repeats=repeats, user=user,
                   targets=_as_targets(targets), reduce=reduce, label=keyfile.check_label(label))

    # -- the master's code, from the secret ---------------------------------------------------

    @property
    def users(self) -> int:
        return self.q * self.q + self.q + 1

    @property
    def block_size(self) -> int:  # k: the points of one line, the 0s of one user's code
        return self.q + 1

    @property
    def bits(self) -> int:
        return self.users * self.repeats

    @cached_property
    def codes(self) -> torch.Tensor:
        """(users, v) int64: the AND-ACC code of every user of the master (0 on its line)."""
        incidence = torch.from_numpy(projective_plane(self.q))
        points = keyed_choice(keyfile.derive_seed(self.secret, "deepmarks/points"),
                              self.users, self.users)
        lines = keyed_choice(keyfile.derive_seed(self.secret, "deepmarks/lines"),
                             self.users, self.users)
        return (~incidence[lines][:, points]).long()

    @cached_property
    def mask(self) -> torch.Tensor:
        return keyed_below(keyfile.derive_seed(self.secret, "deepmarks/mask"), self.bits, 2)

    def code(self, user: int | None = None) -> torch.Tensor:
        """A user's code repeated `repeats` times, (bits,) int64, before the mask."""
        return self.codes[self.user if user is None else user].repeat(self.repeats)

    def weight_key(self) -> WeightKey:
        """This user's masked code as an mlguard weight key on the master's shared
        projection (its parameter lookup, capacity check and exact read are reused)."""
        return self._weight_key

    @cached_property
    def _weight_key(self) -> WeightKey:
        message = (self.code() ^ self.mask).tolist()
        return WeightKey._checked(secret=self.secret, nonce=self.nonce, bits=self.bits,
                                  targets=self.targets, reduce=self.reduce, message=message,
                                  projection=2)

    def for_user(self, user: int, label: str | None = None) -> DeepMarksKey:
        """Another user's key of the same master."""
        return DeepMarksKey.generate(targets=self.targets, user=user, q=self.q,
                                     repeats=self.repeats, reduce=self.reduce,
                                     secret=self.secret, label=label)

    def to_body(self) -> dict:
        return {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "q": self.q, "repeats": self.repeats, "user": self.user,
                "targets": list(self.targets), "reduce": self.reduce}

    @classmethod
    def from_body(cls, body: dict) -> DeepMarksKey:
        try:
            if body["scheme"] != SCHEME:
                raise ValueError(f"scheme must be {SCHEME!r}, got {body['scheme']!r}")
            return cls._checked(secret=keyfile.secret_from_hex(body["secret"]),
                                nonce=bytes.fromhex(body["nonce"]), q=body["q"],
                                repeats=body["repeats"], user=body["user"],
                                targets=body["targets"], reduce=body["reduce"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"deepmarks key body is missing or has a bad field: {e}") from None


def read_bits_of(model, key: DeepMarksKey) -> torch.Tensor:
    """The bits (int64, (bits,)) the model's target weights give on the master's projection:
    the exact read (projection 2) of mlguard's weight keys."""
    return WeightWatermark(key.weight_key()).extract(model).cpu()


def user_reading(bits: torch.Tensor, key: DeepMarksKey, user: int | None = None) -> Reading:
    """User `user`'s reading (the key's own by default) from read bits: how many positions
    of its line read 0 once the mask is removed (all of them for the user's copy and for
    an average of colluders including it; Binomial(k * repeats, 1/2) for an independent
    model)."""
    user = key.user if user is None else user
    code = key.code(user)
    demasked = bits ^ key.mask
    line = code == 0
    matches = int((demasked[line] == 0).sum())
    return Reading(matches, int(line.sum()), 0.5,
                   {"null": NULL, "user": user, "code_agreement": int((demasked == code).sum()),
                    "code_bits": key.bits})


class DeepMarksEmbedding(Embedding):
    """loss = strength * mean((R w / rms(w) - z)^2), z_i = +-margin (see the module
    docstring): 0 code bits at margin_zero, 1 bits at margin_one, signs from the masked
    code. An MSE, not Uchida's BCE, so that the 1 bits stay small: averaging relies on the
    0s outweighing them."""

    def __init__(self, key: DeepMarksKey, strength: float = 1.0, margin_one: float = 2.0,
                 margin_zero: float = 6.0):
        if not isinstance(key, DeepMarksKey):
            raise TypeError(f"key must be a DeepMarksKey, got {type(key).__name__}")
        self.key = key
        self.strength = check_real("strength", strength, low=0, low_open=True)
        margin_one = check_real("margin_one", margin_one, low=0, low_open=True)
        margin_zero = check_real("margin_zero", margin_zero, low=0, low_open=True)
        if margin_zero <= margin_one:
            raise ValueError(f"margin_zero ({margin_zero}) must exceed margin_one "
                             f"({margin_one}): averaged colluders read as the AND of their "
                             "codes only when the 0 bits weigh more")
        code, masked = key.code(), key.weight_key().message_tensor()
        self._z = ((masked.float() * 2 - 1)
                   * torch.where(code == 0, margin_zero, margin_one)).float()

    def loss(self, model: torch.nn.Module, x: torch.Tensor | None = None,
             y: torch.Tensor | None = None) -> torch.Tensor:
        wkey = self.key.weight_key()
        w = wkey.reduce_cat(wkey.parameters(model))
        wkey.check_capacity(w.numel())
        proj = keyed_projection(w, wkey.seed, wkey.bits)
        rms = w.detach().float().pow(2).mean().sqrt().clamp_min(1e-12)
        return self.strength * (proj / rms - self._z.to(proj.device)).pow(2).mean()


@dataclass
class Colluders:
    """Who a suspect names: every user whose reading survives Bonferroni over all users
    (`named`), and the AND-ACC decoding (`decoded`: users whose whole line reads 0 in a
    majority of the repeats)."""

    named: list[int]
    decoded: list[int]
    readings: list[Reading]  # one per user, in user order
    log_p_values: list[float]
    alpha: float

    def named_p(self) -> dict[int, float]:
        return {u: math.exp(self.log_p_values[u]) for u in self.named}


def identify(model, key: DeepMarksKey, alpha: float = 1e-6) -> Colluders:
    """Reads the suspect once and tests every user of the key's master (the paper's
    colluder detection)."""
    alpha = check_real("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    bits = read_bits_of(model, key)
    readings = [user_reading(bits, key, u) for u in range(key.users)]
    logs = [stats.binomial_log_sf(r.matches, r.total, r.chance) for r in readings]
    threshold = math.log(alpha) - math.log(key.users)
    named = [u for u, lp in enumerate(logs) if lp < threshold]
    zeros = ((bits ^ key.mask) == 0).reshape(key.repeats, key.users).float().mean(0) > 0.5
    decoded = [u for u in range(key.users) if bool(zeros[key.codes[u] == 0].all())]
    return Colluders(named=named, decoded=decoded, readings=readings, log_p_values=logs,
                     alpha=alpha)


@register_scheme
class DeepMarks(Scheme):
    name = SCHEME
    key_type = DeepMarksKey
    summary = ("DeepMarks (Chen et al., ICMR 2019): per-user AND anti-collusion codes (BIBD) "
               "in keyed weight projections; averaged colluders are named (white-box)")
    needs_module = False

    @classmethod
    def generate(cls, *, secret=None, **options) -> DeepMarksKey:
        return DeepMarksKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--targets", nargs="+", required=True,
                            help="parameter names carrying the code, e.g. 7.weight")
        parser.add_argument("--user", type=int, default=0, help="the user's index (its line)")
        parser.add_argument("--q", type=int, default=7, help="prime: q^2+q+1 users")
        parser.add_argument("--repeats", type=int, default=4)
        parser.add_argument("--reduce", choices=REDUCTIONS, default="none")
        parser.add_argument("--family", default=None, metavar="KEYFILE",
                            help="another user's deepmarks key file: the new key is of its "
                                 "master (secret, q, repeats, targets, reduce)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DeepMarksKey:
        if args.family is None:
            return DeepMarksKey.generate(targets=args.targets, user=args.user, q=args.q,
                                         repeats=args.repeats, reduce=args.reduce)
        other = DeepMarksKey.from_body(keyfile.read_key_file(args.family))
        if (list(other.targets), other.q, other.repeats, other.reduce) != \
                (list(args.targets), args.q, args.repeats, args.reduce):
            raise ValueError(f"--family {args.family}: its targets/q/repeats/reduce "
                             f"({list(other.targets)}, {other.q}, {other.repeats}, "
                             f"{other.reduce}) differ from the ones given")
        return other.for_user(args.user)

    @classmethod
    def embedding(cls, key, *, strength: float = 1.0, margin_one: float = 2.0,
                  margin_zero: float = 6.0) -> DeepMarksEmbedding:
        return DeepMarksEmbedding(key, strength, margin_one, margin_zero)

    @classmethod
    def read_many(cls, keys: Sequence, suspects: Sequence[Suspect],
                  options: ReadOptions) -> list[list[Reading | Exception]]:
        """One read of each suspect per master (users of one master share R)."""
        out = []
        for suspect in suspects:
            model = suspect.state_dict if suspect.state_dict is not None else suspect.module
            cache: dict = {}
            row: list[Reading | Exception] = []
            for key in keys:
                try:
                    if not isinstance(key, DeepMarksKey):
                        raise TypeError(f"key must be a DeepMarksKey, got {type(key).__name__}")
                    family = dataclasses.replace(key, user=0, nonce=b"", label=None, path=None)
                    if family not in cache:
                        cache[family] = read_bits_of(model, key)
                    row.append(user_reading(cache[family], key))
                except (ValueError, TypeError, RuntimeError) as e:
                    row.append(e)
            out.append(row)
        return out

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        result = cls.read_many([key], [suspect], options)[0][0]
        if isinstance(result, Exception):
            raise result
        return result

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = DeepMarksKey.from_body(body)
        return key.block_size * key.repeats, 0.5

    @classmethod
    def attacker_key(cls, key: DeepMarksKey) -> DeepMarksKey:
        """A fresh master's user 0 on the same targets (the overwrite attack's key)."""
        return DeepMarksKey.generate(targets=key.targets, q=key.q, repeats=key.repeats,
                                     reduce=key.reduce)
