"""How evaluate()'s and the CLI's attack specs (names, (name, params) pairs with sweeps,
callables) expand into single runs; the names come from the attack registry
(attacks/registry.py), where each attack declares what it needs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ..attacks.registry import get_attack
from ..schemes.base import scheme_of


@dataclass
class Run:
    """One attack to run: `name` as reported, the function, its parameters, and what
    evaluate() supplies (the registry's `needs`; none for a user's callable)."""

    name: str
    fn: Callable
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
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
    """A name, a (name, params) pair, a callable or a (callable, params) pair -> runs, one per
    point of the sweep (params given as lists are swept, all combinations)."""
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


def parse_cli(text: str) -> list[tuple[str, dict]]:
    """ "ftal,prune:0.5,prune:0.9,quantize:4,jpeg:50,distill" -> [(name, params), ...].
    A value after ':' sets the attack's main parameter (its main_param); k=v pairs after
    further ':' set others, e.g. "fine_prune:0.5:epochs=2"."""
    specs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty attack in {text!r}")
        name, *rest = item.split(":")
        attack = get_attack(name)
        params: dict = {}
        for j, part in enumerate(rest):
            if "=" in part:
                k, v = part.split("=", 1)
            elif j == 0:
                k, v = attack.main_param, part
            else:
                raise ValueError(f"attack {item!r}: write extra parameters as key=value")
            params[k.strip()] = _number(v.strip())
        specs.append((attack.name, params))
    return specs


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
