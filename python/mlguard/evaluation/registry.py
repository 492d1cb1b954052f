"""How evaluate()'s and the CLI's attack specs (names, (name, params) pairs with sweeps,
callables) expand into single runs; the names come from the attack registry
(attacks/registry.py), where each attack declares what it needs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ..attacks.registry import get_attack
from ..attacks.stacked import Stack
from ..schemes.base import scheme_of


@dataclass
class Run:
    """One attack to run: `name` as reported, the function, its parameters, and what
    evaluate() supplies (the registry's `needs`; none for a user's callable)."""

    name: str
    fn: Callable | None  # None for a stacked run
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    steps: tuple[Run, ...] = ()  # a stacked run: these, in order

    def __call__(self, model):
        """The attacked copy: the steps one after another, each step's info kept in order."""
        if not self.steps:
            return self.fn(model, **self.params)
        infos = []
        for step in self.steps:
            model = step(model)
            infos.append({"attack": step.name, **getattr(model, "attack_info", {})})
        model.attack_info = {"steps": infos}
        return model

    @property
    def label(self) -> str:
        if self.steps:
            return " + ".join(f"{s.name}({s.label})" if s.label else s.name for s in self.steps)
        shown = {k: _short(v) for k, v in self.params.items()
                 if k not in ("data", "mean", "std")}
        return ", ".join(f"{k}={v}" for k, v in shown.items())


def _short(value) -> str:
    try:
        return scheme_of(value).describe(value)  # a key: as its scheme names it
    except TypeError:
        return str(value)


def canonical(name: str) -> str:
    """The registered name for `name` or an alias of it."""
    return get_attack(name).name


def expand(spec, index: int) -> list[Run]:
    """A name, a (name, params) pair, a callable, a (callable, params) pair or a Stack of
    them -> runs, one per point of the sweep (params given as lists are swept, all
    combinations; a stack runs every combination of its steps' sweeps)."""
    if isinstance(spec, Stack):
        per_step = [expand(step, index) for step in spec.specs]
        return [Run("+".join(r.name for r in combo), None, steps=tuple(combo))
                for combo in itertools.product(*per_step)]
    if isinstance(spec, str):
        spec = (spec, {})
    if callable(spec):
        spec = (spec, {})
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict)):
        raise TypeError(f"attacks[{index}] must be a name, a (name, params) pair or a callable "
                        f"model -> model, got {spec!r}")
    what, params = spec
    if isinstance(what, str):
        attack = get_attack(what)
        name, fn, base, needs = attack.name, attack.fn, dict(attack.fixed), attack.needs
    elif callable(what):
        name, fn, base, needs = getattr(what, "__name__", "custom"), what, {}, ()
    else:
        raise TypeError(f"attacks[{index}]: the attack must be a name or a callable, got "
                        f"{type(what).__name__}")
    swept = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    for k, v in swept.items():
        if not v:
            raise ValueError(f"attacks[{index}] ({name}): sweep {k}=[] is empty")
    runs = []
    for values in itertools.product(*swept.values()):
        runs.append(Run(name, fn, {**base, **dict(zip(swept, values))}, needs))
    return runs


def parse_cli(text: str) -> list:
    """ "ftal,prune:0.5,prune:0.9,quantize:4,jpeg:50,distill" -> [(name, params), ...].
    A value after ':' sets the attack's main parameter (its main_param); k=v pairs after
    further ':' set others, e.g. "fine_prune:0.5:epochs=2"; a value may itself hold a ':'
    ("retrain:10:arch=mlguard.evaluation.archs:fashion_mlp", cross-architecture retraining).
    "rtal:2+distill" is a Stack."""
    specs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty attack in {text!r}")
        if "+" in item:
            specs.append(Stack(tuple(_parse_one(part.strip(), text)
                                     for part in item.split("+"))))
        else:
            specs.append(_parse_one(item, text))
    return specs


def _parse_one(item: str, text: str) -> tuple[str, dict]:
    if not item:
        raise ValueError(f"empty attack in {text!r}")
    name, *rest = item.split(":")
    attack = get_attack(name)
    pairs: list[list[str]] = []
    for j, part in enumerate(rest):
        if "=" in part:
            pairs.append(part.split("=", 1))
        elif j == 0:
            pairs.append([attack.main_param, part])
        elif ("=" in rest[j - 1] and ":" not in pairs[-1][1]
              and isinstance(_number(pairs[-1][1].strip()), str)
              and part.strip().replace(".", "_").isidentifier()):
            pairs[-1][1] += ":" + part  # "arch=package.module:factory"
        else:
            raise ValueError(f"attack {item!r}: write extra parameters as key=value")
    return attack.name, {k.strip(): _number(v.strip()) for k, v in pairs}


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
