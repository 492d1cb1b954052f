"""Scheme checkers: how a batch of loaded models is tested against all keys of one scheme.

The scan groups its keys by scheme (``scheme_of``) and builds one checker per scheme with
``checker_for``: a registered scheme (mlguard.schemes) is read through its ``read_many`` by a
``SchemeChecker``, with nothing to register here. For keys that are no registered scheme's,
a checker class can still be registered by name (``register_checker``), with this
interface::

    class MyChecker:
        needs_module: bool      # True: needs an nn.Module (from `arch` or TorchScript), so
                                # the scan insists on arch=; False: the state_dict suffices
        models_per_call: int    # how many models check() would like at once (>= 1)

        def __init__(self, keys: list, device: torch.device, options: CheckerOptions): ...

        def check(self, models: list[LoadedModel]) -> list[list[Outcome]]:
            # one list per model, holding one Outcome per key, in the order of `keys`

An ``Outcome`` is (matches, total, chance, extra) for an exact one-sided binomial test
(H0: each of `total` trials matches with probability `chance`), or an error message for a
(model, key) pair that could not be checked. ``check`` may raise; the scan then records the
exception as the error of every (model, key) pair of that call and goes on.

A scheme that needs only tensors can be plugged in with a plain function::

    def check_signs(state_dicts, keys, device):
        # state_dicts: list of {name: tensor} on `device`; return, per model, one
        # (matches, total, chance, extra) tuple per key, or a str/Exception for a pair
        # that cannot be checked
        ...

    register_state_dict_checker("my-signs", check_signs, models_per_call=64)

The state_dict tensors are on the scan device, read-only by convention (on CUDA they are
views into one buffer per file; for safetensors on the CPU, views into the file's bytes).
``extra`` must be JSON data (it goes into the journal and the reports).

Keys are matched to checkers by ``scheme_of(key)``: their registered scheme's name, else the
key's ``scheme`` attribute, else the ``scheme`` field of ``key.to_body()``. A key also needs
``commitment()`` (hex; its first 16 characters are the row's key_id). Key files are read
with ``mlguard.load_key``, which knows every registered scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..files.model import load_into, resolve_arch  # noqa: F401  (resolve_arch: re-exported)
from ..schemes.base import SCHEMES, Reading, ReadOptions, Scheme, Suspect


@dataclass
class LoadedModel:
    """A model file ready to check: tensors already on the scan's device."""

    path: str
    size: int
    sha256: str
    state_dict: dict[str, torch.Tensor]
    module: torch.nn.Module | None = None  # set for (trusted) TorchScript files
    buffer: torch.Tensor | None = None  # the file's bytes, while state_dict views them
    weights_sha256: str | None = None  # state_dict_sha256 of the file's (unwrapped) weights


@dataclass
class Outcome:
    """One (model, key) test: `matches` of `total` trials, each with chance `chance` under H0."""

    matches: int | None = None
    total: int | None = None
    chance: float | None = None
    extra: dict = field(default_factory=dict)
    error: str | None = None
    reads: int = 1  # reads the p-value is corrected for (Reading.reads)

    @classmethod
    def failed(cls, message: str) -> Outcome:
        return cls(error=message)


@dataclass
class CheckerOptions:
    """Scan settings a checker may use."""

    arch: Callable[[], torch.nn.Module] | None = None  # builds the architecture, no weights
    batch_size: int = 1024
    autocast: bool = False  # bf16 autocast (CUDA only)
    reference: object | None = None  # weights.align.Reference: weight keys read after alignment


def scheme_of(key) -> str:
    """The scheme name a key belongs to: its registered scheme's (schemes/), else its
    `scheme` attribute or its body's field (keys of checkers registered by name)."""
    for name, scheme in SCHEMES.items():
        if isinstance(key, scheme.key_type):
            return name
    scheme = getattr(key, "scheme", None)
    if scheme is None and hasattr(key, "to_body"):
        scheme = key.to_body().get("scheme")
    if not isinstance(scheme, str):
        raise TypeError(f"keys: cannot tell the scheme of a {type(key).__name__}; give it a "
                        "`scheme` attribute or a to_body() with a 'scheme' field")
    return scheme


def arch_name(arch, arch_kwargs: Mapping | None = None) -> str | None:
    """A stable description of the architecture, recorded in the journal."""
    if arch is None:
        return None
    name = arch if isinstance(arch, str) else \
        f"{getattr(arch, '__module__', '?')}:{getattr(arch, '__qualname__', repr(arch))}"
    return f"{name}{sorted((arch_kwargs or {}).items())}" if arch_kwargs else name


# -- registered schemes (schemes/) ----------------------------------------------------------


class SchemeChecker:
    """A registered scheme's read_many as a checker (``checker_for`` makes one class per
    scheme). Schemes that need the network get each state_dict file loaded in place into one
    module built once from `arch` (strict, as ``load_model`` loads them: a name or shape
    mismatch is "wrong architecture"; each tensor keeps its dtype from the file), on the
    scan device, in eval mode; TorchScript files bring their own module. Such schemes read
    one model per call; the others read ``models_per_call`` state_dicts at once."""

    scheme: type[Scheme]
    needs_module: bool = True
    models_per_call: int = 1

    def __init__(self, keys: list, device: torch.device, options: CheckerOptions):
        self.keys, self.device, self.options = keys, device, options
        # one cache per scan: what the scheme prepares for these keys (e.g. triggers) is kept
        self.read_options = ReadOptions(batch_size=options.batch_size,
                                        autocast=options.autocast, reference=options.reference,
                                        cache={})
        self._module: torch.nn.Module | None = None

    def module(self) -> torch.nn.Module:
        """The architecture, built once per scan and reused for every state_dict file."""
        if self._module is None:
            if self.options.arch is None:
                raise ValueError(f"no architecture: {self.scheme.name} keys need arch= "
                                 "(--arch MODULE:FACTORY) to run state_dict files")
            module = self.options.arch()
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"arch must build a torch.nn.Module, got {type(module).__name__}")
            module = module.to(self.device).eval().requires_grad_(False)
            if self.device.type == "cuda":
                module = module.to(memory_format=torch.channels_last)
            self._module = module
        return self._module

    def preflight(self) -> None:
        """Builds the architecture once (schemes that need it) and lets the scheme check its
        keys against it (Scheme.preflight): configuration errors stop the scan before it
        starts. Raises ValueError naming the problem."""
        module = None
        if self.needs_module and self.options.arch is not None:
            try:
                module = self.module()
            except Exception as e:
                raise ValueError(f"arch: building the architecture failed: "
                                 f"{type(e).__name__}: {e}") from None
        self.scheme.preflight(self.keys, self.device, module, self.read_options)

    def check(self, models: Sequence[LoadedModel]) -> list[list[Outcome]]:
        if self.needs_module:  # one module, loaded in place: one model at a time
            return [self._check_module(m) for m in models]
        suspects = [Suspect(None, m.state_dict, self.device) for m in models]
        try:
            readings = self.scheme.read_many(self.keys, suspects, self.read_options)
        except Exception:
            if len(models) == 1:
                raise
            # One bad model must not fail the others of its call: retry them one by one.
            return [self._check_alone(m) for m in models]
        return self._outcomes(readings, len(models))

    def _check_module(self, model: LoadedModel) -> list[Outcome]:
        try:
            module = model.module if model.module is not None else \
                load_into(self.module(), model.state_dict, "the file")
        except Exception as e:  # wrong architecture, no architecture
            return [Outcome.failed(str(e))] * len(self.keys)
        suspect = Suspect(module, model.state_dict, self.device)
        return self._outcomes(self.scheme.read_many(self.keys, [suspect], self.read_options),
                              1)[0]

    def _check_alone(self, model: LoadedModel) -> list[Outcome]:
        try:
            return self.check([model])[0]
        except Exception as e:
            return [Outcome.failed(f"check failed: {type(e).__name__}: {e}"[:300])] * len(self.keys)

    def _outcomes(self, readings, count: int) -> list[list[Outcome]]:
        if len(readings) != count or any(len(r) != len(self.keys) for r in readings):
            raise ValueError(f"scheme {self.scheme.name}: read_many must return one list per "
                             "model with one reading per key")
        return [[_reading_outcome(r) for r in row] for row in readings]


def _reading_outcome(reading) -> Outcome:
    if isinstance(reading, Exception):
        return Outcome.failed(str(reading))
    if not isinstance(reading, Reading):
        raise TypeError(f"read_many must give Readings or Exceptions, got "
                        f"{type(reading).__name__}")
    return Outcome(reading.matches, reading.total, reading.chance, dict(reading.extra),
                   reads=reading.reads)


_SCHEME_CHECKERS: dict[type, type] = {}


def scheme_checker(scheme: type[Scheme]) -> type[SchemeChecker]:
    """The SchemeChecker class of a registered scheme (made once)."""
    if scheme not in _SCHEME_CHECKERS:
        _SCHEME_CHECKERS[scheme] = type(f"SchemeChecker[{scheme.name}]", (SchemeChecker,), {
            "scheme": scheme, "needs_module": bool(scheme.needs_module),
            "models_per_call": max(1, int(scheme.models_per_call))})
    return _SCHEME_CHECKERS[scheme]


def checker_for(scheme: str) -> type | None:
    """The checker for keys of `scheme`: one registered with register_checker (it takes
    precedence), else the registered scheme's read_many, else None."""
    if scheme in CHECKERS:
        return CHECKERS[scheme]
    if scheme in SCHEMES:
        return scheme_checker(SCHEMES[scheme])
    return None


# -- state_dict-only schemes (weight-space keys) --------------------------------------------

StateDictCheckFn = Callable[[list, list, torch.device], list]


class StateDictChecker:
    """Adapts a function check(state_dicts, keys, device) to the checker interface."""

    needs_module = False
    fn: StateDictCheckFn
    models_per_call = 1

    def __init__(self, keys: list, device: torch.device, options: CheckerOptions):
        self.keys, self.device = keys, device

    def check(self, models: Sequence[LoadedModel]) -> list[list[Outcome]]:
        try:
            answers = type(self).fn([m.state_dict for m in models], self.keys, self.device)
        except Exception:
            if len(models) == 1:
                raise
            # One bad model must not fail the others of its call: retry them one by one.
            return [self._check_alone(m) for m in models]
        if len(answers) != len(models) or any(len(a) != len(self.keys) for a in answers):
            raise ValueError(f"{type(self).__name__}: the check function must return one "
                             "list per model with one result per key")
        return [[_as_outcome(a) for a in per_model] for per_model in answers]

    def _check_alone(self, model: LoadedModel) -> list[Outcome]:
        try:
            return self.check([model])[0]
        except Exception as e:
            return [Outcome.failed(f"check failed: {type(e).__name__}: {e}"[:300])] * len(self.keys)


def _as_outcome(answer) -> Outcome:
    if isinstance(answer, Outcome):
        return answer
    if isinstance(answer, (str, Exception)):
        return Outcome.failed(str(answer))
    matches, total, chance, extra = answer
    return Outcome(int(matches), int(total), float(chance), dict(extra or {}))


CHECKERS: dict[str, type] = {}
"""Checkers registered by name (register_checker), for keys that are no registered scheme's
(or to replace a scheme's read_many in the scan); registered schemes need no entry."""


def register_checker(scheme: str, checker: type) -> None:
    """Makes the scan use `checker` (see the module docstring) for keys of `scheme`."""
    if not isinstance(scheme, str) or not scheme:
        raise ValueError(f"scheme must be a non-empty str, got {scheme!r}")
    CHECKERS[scheme] = checker


def register_state_dict_checker(scheme: str, fn: StateDictCheckFn,
                                models_per_call: int = 1) -> None:
    """Registers a tensors-only scheme from a function (see the module docstring)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(models_per_call, int) or models_per_call < 1:
        raise ValueError(f"models_per_call must be an int >= 1, got {models_per_call!r}")
    checker = type(f"StateDictChecker[{scheme}]", (StateDictChecker,),
                   {"fn": staticmethod(fn), "models_per_call": models_per_call})
    register_checker(scheme, checker)


def __getattr__(name: str):
    # Names of the trigger-set scheme's checker before schemes/ (issue 19), kept for callers.
    if name == "TriggerSetChecker":
        from ..schemes.trigger_set import legacy_checker
        return legacy_checker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
