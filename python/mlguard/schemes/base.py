"""What a watermarking scheme is, and the registry of schemes by name.

A scheme is a small stateless class (its methods take the key) that says four things:

- **keys**: the key type it makes from a secret (``key_type``, a frozen dataclass that
  subclasses ``mlguard.keys.base.Key`` and round-trips through ``to_body``/``from_body``;
  its body's ``"scheme"`` field is the scheme's ``name``) and how ``mlguard key new <name>``
  makes one (``add_arguments`` / ``from_arguments``);
- **training**: what training adds (``embedding(key, ...)`` -> an ``Embedding``: extra
  batches mixed into the user's own and/or a loss term added to theirs);
- **reading**: how a suspect is read (``read_many``: models x keys -> ``Reading``\\ s);
- **the null**: each ``Reading`` is (matches, total, chance): under H0 (the suspect was not
  derived from the owner's marked model) matches ~ at most Binomial(total, chance), and the
  verdict is the one-sided binomial test. ``chance`` is exact where the scheme's secret makes
  it so (uniform secret labels or bits) and a stated upper bound where it is estimated from
  reference models (``conservative_chance``); ``Reading.extra["null"]`` says which, in words.
  ``expected_test(body)`` gives the (total, chance) a verdict for an opened key must use, so
  evidence checking (ownership/report.py) recomputes it without knowing the scheme.

``verify``, ``scan``, ``evaluate``, evidence and the CLI ask ``get_scheme(name)`` /
``scheme_of(key)`` and never name a particular scheme; adding one is one file in this folder
(imported in schemes/__init__.py) plus its tests, or ``@register_scheme`` in a user's script.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

class _Registry(dict):
    """The registered schemes by name, the built-in ones in catalog order (the order users
    see). The first look at it imports the built-in scheme modules (catalog.py), so a module
    used on its own (`from mlguard.verification import verify`, with `import mlguard` loading nothing
    up front) finds them all the same."""

    _loaded = False

    def _load(self) -> None:
        if not _Registry._loaded:
            _Registry._loaded = True  # first: the scheme modules register through this dict
            from .catalog import BUILTIN
            for module, _, _ in BUILTIN.values():
                importlib.import_module(f"{__package__}.{module}")

    def __getitem__(self, name):
        self._load()
        return super().__getitem__(name)

    def __contains__(self, name) -> bool:
        self._load()
        return super().__contains__(name)

    def _names(self) -> list[str]:
        """The built-in schemes in catalog order, then the others as they registered (the
        order does not depend on which module a process happened to import first)."""
        from .catalog import BUILTIN

        builtin = list(BUILTIN)
        names = list(dict.keys(self))
        return sorted(names, key=lambda n: (builtin.index(n) if n in builtin else len(builtin),
                                            names.index(n)))

    def __iter__(self):
        self._load()
        return iter(self._names())

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, name, default=None):
        self._load()
        return super().get(name, default)

    def keys(self):
        self._load()
        return self._names()

    def values(self):
        self._load()
        return [dict.__getitem__(self, n) for n in self._names()]

    def items(self):
        self._load()
        return [(n, dict.__getitem__(self, n)) for n in self._names()]


SCHEMES: dict[str, type[Scheme]] = _Registry()
"""Every registered scheme by name (register_scheme adds to it)."""


def register_scheme(cls: type[Scheme]) -> type[Scheme]:
    """Registers a Scheme subclass under its ``name`` (which goes into key files: never
    rename one). Usable as a decorator, from the library or from a user's script."""
    if not (isinstance(cls, type) and issubclass(cls, Scheme)):
        raise TypeError(f"register_scheme takes a Scheme subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"{cls.__name__}.name must be a non-empty name of letters, digits, "
                         f"'_' and '-', got {name!r}")
    if name in SCHEMES and SCHEMES[name] is not cls:
        raise ValueError(f"scheme {name!r} is already registered by {SCHEMES[name].__name__}")
    if not isinstance(getattr(cls, "key_type", None), type):
        raise TypeError(f"{cls.__name__}.key_type must be the scheme's key class")
    SCHEMES[name] = cls
    return cls


def scheme_names() -> tuple[str, ...]:
    """The registered schemes' names, in registration order."""
    return tuple(SCHEMES)


def get_scheme(name) -> type[Scheme]:
    """The scheme registered as ``name``; ValueError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in SCHEMES:
        raise ValueError(f"scheme must be one of {scheme_names()}, got {name!r}")
    return SCHEMES[name]


def scheme_of(key) -> type[Scheme]:
    """The registered scheme of a key object (by its type; TypeError for anything else)."""
    for scheme in SCHEMES.values():
        if isinstance(key, scheme.key_type):
            return scheme
    known = ", ".join(s.key_type.__name__ for s in SCHEMES.values())
    raise TypeError(f"key must be a {known} (a key of a registered scheme), got "
                    f"{type(key).__name__}")


@dataclass
class Reading:
    """One (model, key) read: ``matches`` of ``total`` trials, each matching with
    probability at most ``chance`` under H0. ``extra`` is JSON data (journal, reports).
    ``reads``: how many reads of the same suspect and key this one was chosen from (the one
    with the smallest p); its p-value is corrected for them by the union bound,
    p = min(1, reads * binomial tail), exact-conservative whatever their dependence."""

    matches: int
    total: int
    chance: float
    extra: dict = field(default_factory=dict)
    reads: int = 1

    def __post_init__(self):
        if not (isinstance(self.total, int) and self.total >= 1
                and isinstance(self.matches, int) and 0 <= self.matches <= self.total):
            raise ValueError(f"a reading needs 0 <= matches <= total, total >= 1 (ints), got "
                             f"{self.matches!r}/{self.total!r}")
        if not (isinstance(self.chance, float) and 0.0 < self.chance < 1.0):
            raise ValueError(f"a reading's chance must be a float in (0, 1), got "
                             f"{self.chance!r}")
        if not (isinstance(self.reads, int) and not isinstance(self.reads, bool)
                and self.reads >= 1):
            raise ValueError(f"a reading's reads must be an int >= 1, got {self.reads!r}")


@dataclass
class Suspect:
    """What a scheme may look at in one suspect model: the module (to run it, or hook its
    activations) and/or its state_dict (names as a file gives them, on ``device``). A
    scheme with ``needs_module = False`` gets ``module=None`` in a scan of state_dicts."""

    module: torch.nn.Module | None
    state_dict: Mapping[str, torch.Tensor] | None
    device: torch.device = torch.device("cpu")


@dataclass
class ReadOptions:
    """Settings a read may use (the scan's and verify's)."""

    batch_size: int = 256
    autocast: bool = False  # bf16 autocast (CUDA only)
    reference: object | None = None  # weights.align.Reference, for weight-space reads
    carriers: torch.Tensor | None = None  # pattern-mode trigger keys: the carrier images
    # What a scheme prepared once for these keys (materialized inputs...), kept between the
    # read_many calls of one scan: a scheme may store anything under its own name. None
    # (verify): nothing is kept.
    cache: dict | None = None


class Embedding:
    """What training adds for one key, in the user's own loop::

        x, y = emb.batch(x, y)                       # extra examples mixed in (or not)
        loss = loss_fn(model(x), y) + emb.loss(model, x, y)

    The defaults add nothing; a scheme overrides what its paper's training does."""

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=x.device)


class Scheme:
    """One watermarking or fingerprinting scheme. Subclasses set the class attributes and
    override ``generate``, ``embedding``, ``read_many`` (or ``read``) and ``expected_test``."""

    name: ClassVar[str]  # the key file's "scheme" field
    key_type: ClassVar[type]  # the key class; key_type.from_body(body) reads a key file body
    summary: ClassVar[str] = ""  # one line for --help and the docs (cite the paper)
    needs_module: ClassVar[bool] = True  # False: the state_dict alone is read (white-box)

    # Optional hooks (defaults below); verify, scan, evaluate and the CLI use them instead of
    # naming schemes. models_per_call: suspects a scan gives read_many at once (schemes that
    # batch across models, needs_module False, set more). aligns_to_reference: reads use
    # ReadOptions.reference (weight-space reads: permuted or widened copies read as the
    # original), so evaluate adds "+reference" rows and verify passes the reference.
    models_per_call: ClassVar[int] = 1
    aligns_to_reference: ClassVar[bool] = False
    cli_aliases: ClassVar[tuple[str, ...]] = ()  # other verbs for `mlguard key new <name>`

    # -- keys -------------------------------------------------------------------------------

    @classmethod
    def generate(cls, *, secret: bytes | None = None, **options):
        """A new key (a fresh secret unless ``secret`` is given)."""
        raise NotImplementedError(f"scheme {cls.name!r} has no generate()")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The options of ``mlguard key new <name>`` (the output path is added by the CLI)."""

    @classmethod
    def from_arguments(cls, args: argparse.Namespace):
        """A new key from the parsed ``mlguard key new <name>`` options."""
        raise NotImplementedError(f"scheme {cls.name!r} cannot be made from the command line")

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def embedding(cls, key, **options) -> Embedding:
        """What training adds for ``key`` (see Embedding)."""
        raise NotImplementedError(f"scheme {cls.name!r} has no embedding()")

    @classmethod
    def embed(cls, model: torch.nn.Module, key, loader, epochs: int, optimizer,
              loss_fn=None, *, alpha: float = 1e-6, min_retention: float = 0.8, **options):
        """mlguard.embed for this scheme's keys: train `model` until `key` is detected with
        at least `min_retention` of its trials matching; returns the Verdict. The default
        runs ``embedding(key, **options)`` in a plain loop (mlguard.embedding)."""
        from ..embedding import train_embedding  # it imports verification, which imports us

        return train_embedding(cls, model, key, loader, epochs, optimizer, loss_fn,
                               alpha=alpha, min_retention=min_retention, **options)

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        """One model against one key. The default asks read_many (when the scheme overrides
        it) and raises the pair's exception, if any."""
        if getattr(cls.read_many, "__func__", None) is Scheme.read_many.__func__:
            raise NotImplementedError(f"scheme {cls.name!r} has neither read() nor read_many()")
        reading = cls.read_many([key], [suspect], options)[0][0]
        if isinstance(reading, Exception):
            raise reading
        return reading

    @classmethod
    def preflight(cls, keys: Sequence, device: torch.device, module: torch.nn.Module | None,
                  options: ReadOptions) -> None:
        """Before a scan starts: raise ValueError naming the key and the problem if these
        keys cannot be read on ``device`` with the scan's architecture (``module``, built
        once, on ``device``; None without one or for needs_module False), so that a
        configuration error stops the scan instead of turning every file into an error row.
        The default checks nothing."""

    @classmethod
    def read_many(cls, keys: Sequence, suspects: Sequence[Suspect],
                  options: ReadOptions) -> list[list[Reading | Exception]]:
        """Many models against many keys of this scheme: one list per suspect, one Reading
        per key in the order of ``keys`` (an Exception for a pair that could not be read).
        Schemes that can batch (one forward for all keys' inputs, one projection for many
        models) override this; the default reads pair by pair."""
        out = []
        for suspect in suspects:
            row: list[Reading | Exception] = []
            for key in keys:
                try:
                    row.append(cls.read(key, suspect, options))
                except (ValueError, TypeError, RuntimeError) as e:
                    row.append(e)
            out.append(row)
        return out

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        """(total, chance) that a verdict for the key with this file body must use."""
        raise NotImplementedError(f"scheme {cls.name!r} has no expected_test()")

    # -- names and attacks (optional) -------------------------------------------------------

    @classmethod
    def nickname(cls, key) -> str:
        """A short name for the key in evaluate's tables (keys given as a list)."""
        return cls.name

    @classmethod
    def describe(cls, key) -> str:
        """One phrase naming the key, e.g. in an attack's parameters."""
        return f"{cls.nickname(key)} key {key.key_id[:8]}"

    @classmethod
    def attacker_key(cls, key, *, model=None, data=None):
        """A fresh key like ``key`` for a thief's overwrite attack (evaluate). Schemes whose
        keys are made from a model and data (adversarial examples, class clusters, source
        images) take the stolen ``model`` and the attacker's ``data``, an (x, y) pair of
        tensors as the model takes them; the others may leave both out of their signature
        (evaluation.attacker_key passes them only where they are accepted)."""
        raise NotImplementedError(f"scheme {cls.name!r} cannot make an attacker key; give "
                                  "the overwrite attack its key= explicitly")

    @classmethod
    def input_normalization(cls, key) -> tuple | None:
        """(mean, std) the key's inputs are normalized with (for query-side attacks), or
        None when the key does not say."""
        return None

    @classmethod
    def input_shape(cls, key) -> tuple | None:
        """The model input shape (C, H, W) the key's inputs have, or None."""
        return None


def conservative_chance(matches: Sequence[int], totals: Sequence[int],
                        confidence: float = 1 - 1e-3) -> float:
    """An upper bound on the per-trial match rate of models *not* derived from the owner's,
    from reference models' reads (``matches[i]`` of ``totals[i]``): the one-sided
    Clopper-Pearson bound at ``confidence`` on the largest single model's rate (each model
    its own bound, the maximum taken), so a scheme whose chance is not fixed by its secret
    tests against the worst reference model seen, not their average. Schemes that use it
    store the reference figures in the key and say so in ``Reading.extra["null"]``."""
    from scipy.stats import beta  # scipy is a dependency; imported when a scheme needs it

    if len(matches) != len(totals) or not matches:
        raise ValueError("conservative_chance needs one (matches, total) per reference model, "
                         f"got {len(matches)} matches and {len(totals)} totals")
    bound = 0.0
    for m, n in zip(matches, totals):
        if not (0 <= m <= n and n >= 1):
            raise ValueError(f"reference read {m}/{n} is not a count of trials")
        upper = 1.0 if m == n else float(beta.ppf(confidence, m + 1, n - m))
        bound = max(bound, upper)
    if not math.isfinite(bound) or bound >= 1.0:
        raise ValueError("the reference models match every trial: this key cannot tell a "
                         "derived model from an independent one")
    return bound
