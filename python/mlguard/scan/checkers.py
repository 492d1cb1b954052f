"""Scheme checkers: how a batch of loaded models is tested against all keys of one scheme.

The scan groups its keys by scheme (``scheme_of``) and builds one checker per scheme from
``CHECKERS``. A checker is a class with this interface::

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

    def check_weights(state_dicts, keys, device):
        # state_dicts: list of {name: tensor} on `device`; return, per model, one
        # (matches, total, chance, extra) tuple per key, or a str/Exception for a pair
        # that cannot be checked
        ...

    register_state_dict_checker("weight", check_weights, models_per_call=64)

The state_dict tensors are on the scan device, read-only by convention (on CUDA they are
views into one buffer per file; for safetensors on the CPU, views into the file's bytes).
``extra`` must be JSON data (it goes into the journal and the reports).

Keys are matched to checkers by ``scheme_of(key)``: the key's ``scheme`` attribute if it
has one, else the ``scheme`` field of ``key.to_body()`` ("trigger-set" for TriggerKey). A
key also needs ``commitment()`` (hex; its first 16 characters are the row's key_id).
Key files are read with ``mlguard.load_key``, so a new scheme's files load once
``load_key`` knows them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..files.model import load_into, resolve_arch  # noqa: F401  (resolve_arch: re-exported)
from ..keys import TriggerKey
from ..verification.verify import (
    logits_of,
    model_dtype,
    normalize,
    pattern_extra,
    pattern_votes,
    trigger_extra,
)


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
    """The scheme name a key belongs to (its `scheme` attribute or its body's field)."""
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


# -- trigger-set keys ----------------------------------------------------------------------


@dataclass
class _TriggerGroup:
    """Keys whose triggers share an input shape: one concatenated, normalized batch."""

    keys: list[TriggerKey]
    inputs: torch.Tensor  # (sum of sizes, C, H, W), each key normalized with its own mean/std
    labels: torch.Tensor  # (sum of sizes,)
    owner: torch.Tensor  # (sum of sizes,) index of the key within the group
    rows: list[slice]  # each key's rows of inputs (pattern-mode keys: K x carriers)


class TriggerSetChecker:
    """All trigger keys in one forward pass per model (per input shape).

    Triggers are materialized and normalized exactly as ``mlguard.verify`` does, once per
    scan, on the scan device, and cast to each model's dtype as verify does. State_dict
    files are loaded in place into one module built from `arch`, as ``load_model`` loads
    them (strict: a name or shape mismatch is "wrong architecture"; each tensor keeps its
    dtype from the file); TorchScript files bring their own module. Autocast (bf16) is used
    on CUDA when asked.
    """

    needs_module = True
    models_per_call = 1

    def __init__(self, keys: list, device: torch.device, options: CheckerOptions):
        for key in keys:
            if not isinstance(key, TriggerKey):
                raise TypeError(f"trigger-set keys must be TriggerKey, got {type(key).__name__}")
        self.keys, self.device, self.options = keys, device, options
        self._module: torch.nn.Module | None = None
        self.groups = self._build_groups(keys)

    def _build_groups(self, keys: list[TriggerKey]) -> list[_TriggerGroup]:
        by_shape: dict[tuple, list[TriggerKey]] = {}
        for key in keys:
            by_shape.setdefault(key.shape, []).append(key)
        groups = []
        for members in by_shape.values():
            inputs, labels, rows, start = [], [], [], 0
            for key in members:
                try:
                    if key.mode == "pattern":  # every stored carrier with every pattern
                        images, which = key.pattern_inputs(device=self.device)
                        key_labels = key.targets.to(self.device)[which]
                    else:
                        images, key_labels = key.materialize(self.device)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"key {key.key_id}: {e}") from None
                inputs.append(normalize(images, key))
                labels.append(key_labels)
                rows.append(slice(start, start + images.shape[0]))
                start += images.shape[0]
            owner = torch.cat([torch.full((r.stop - r.start,), i, dtype=torch.int64,
                                          device=self.device) for i, r in enumerate(rows)])
            batch = torch.cat(inputs)
            if self.device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            groups.append(_TriggerGroup(members, batch, torch.cat(labels), owner, rows))
        return groups

    def module(self) -> torch.nn.Module:
        """The architecture, built once per scan and reused for every state_dict file."""
        if self._module is None:
            if self.options.arch is None:
                raise ValueError("no architecture: trigger-set keys need arch= "
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
        """Builds the architecture once and runs a few triggers of every key through it, so
        that a configuration error (bad arch kwargs, 1000 outputs for 10-class keys, trigger
        shapes the network cannot take) stops the scan before it starts, instead of turning
        every file into an error row. Raises ValueError naming the key and the problem."""
        if self.options.arch is None:
            return  # TorchScript files only: each brings its own module
        try:
            module = self.module()
        except Exception as e:
            raise ValueError(f"arch: building the architecture failed: "
                             f"{type(e).__name__}: {e}") from None
        dtype = model_dtype(module)
        for group in self.groups:
            first = group.inputs[:2].to(dtype)
            try:
                with torch.inference_mode():
                    out = module(first)
            except Exception as e:
                ids = ", ".join(k.key_id for k in group.keys)
                raise ValueError(
                    f"key {ids}: triggers of shape {tuple(group.keys[0].shape)} do not fit the "
                    f"architecture: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ValueError("arch: the model's output is not a (batch, classes) tensor")
            for key in group.keys:
                if out.shape[1] != key.num_classes:
                    raise ValueError(
                        f"key {key.key_id} has num_classes={key.num_classes} but the "
                        f"architecture outputs {out.shape[1]} classes (forgot --arch-kwargs, "
                        f"e.g. '{{\"num_classes\": {key.num_classes}}}'?)")

    def check(self, models: Sequence[LoadedModel]) -> list[list[Outcome]]:
        return [self._check_one(m) for m in models]

    def _check_one(self, model: LoadedModel) -> list[Outcome]:
        try:
            module = model.module if model.module is not None else self._load(model.state_dict)
        except Exception as e:  # wrong architecture, no architecture
            return [Outcome.failed(str(e))] * len(self.keys)
        results: dict[int, Outcome] = {}
        for group in self.groups:
            for key, outcome in zip(group.keys, self._run_group(module, group)):
                results[id(key)] = outcome
        return [results[id(key)] for key in self.keys]

    def _load(self, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return load_into(self.module(), state_dict, "the file")

    def _run_group(self, module: torch.nn.Module, group: _TriggerGroup) -> list[Outcome]:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) \
            if self.options.autocast and self.device.type == "cuda" else contextlib.nullcontext()
        dtype = model_dtype(module)
        try:
            with torch.inference_mode(), autocast:
                logits = [logits_of(module(batch.to(dtype)))
                          for batch in group.inputs.split(self.options.batch_size)]
        except Exception as e:
            message = f"forward pass failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return [Outcome.failed(message)] * len(group.keys)
        if not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in logits):
            return [Outcome.failed("model output is not a (batch, classes) tensor")] * \
                len(group.keys)
        if not all(bool(torch.isfinite(t).all()) for t in logits):
            return [Outcome.failed("model outputs NaN or inf logits for the triggers")] * \
                len(group.keys)
        width = logits[0].shape[1]
        with torch.inference_mode():
            preds = torch.cat([t.argmax(dim=1) for t in logits])
            hits = preds == group.labels
            counts = torch.zeros(len(group.keys), dtype=torch.int64, device=self.device)
            counts.index_add_(0, group.owner, hits.to(torch.int64))
        outcomes = []
        for key, matches, rows in zip(group.keys, counts.tolist(), group.rows):
            if width != key.num_classes:  # counts.tolist(): one sync per group
                outcomes.append(Outcome.failed(
                    f"model outputs {width} classes but key {key.key_id} has "
                    f"num_classes={key.num_classes}"))
            elif key.mode == "pattern":  # as verify: votes against targets, Binomial(K, 1/C)
                votes, rates = pattern_votes(preds[rows], key)
                extra = {**trigger_extra(key, dtype),
                         **pattern_extra(votes, rates, key.size)}
                outcomes.append(Outcome(int((votes == key.targets).sum()), key.patterns,
                                        1.0 / key.num_classes, extra))
            else:
                outcomes.append(Outcome(matches, key.size, 1.0 / key.num_classes,
                                        trigger_extra(key, dtype)))
        return outcomes


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


CHECKERS: dict[str, type] = {"trigger-set": TriggerSetChecker}


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
