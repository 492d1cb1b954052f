"""The attack registry. Each attack registers itself beside its definition:

    @register_attack("prune", main_param="amount", example={"amount": 0.5})
    def prune(model, amount, scope="global"): ...

and evaluate(), `mlguard evaluate --attacks/--list-attacks` and the shared tests in
tests/attacks/test_attacks.py read it from here; nothing else lists attack names.

An attack is a function `model -> new model` that never changes its input. What it takes
from the evaluation besides its own parameters is declared in `needs` (see NEEDS);
evaluate() supplies each one unless the caller gave it. One function may be registered
under several names with different `fixed` parameters (fine_tune as ftll, ftal, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# need -> what evaluate() passes for it (evaluation/evaluate.py has one provider per need)
NEEDS = {
    "data": "data=: the attacker's training data (evaluate's attacker_data)",
    "normalization": "mean=, std=: the trigger keys' normalization, to work in pixel space",
    "key": "key=: a fresh attacker key shaped like the owner's first key",
}
# model: changes the weights; query: transforms the inputs of a model behind an API
SIDES = ("model", "query")


@dataclass(frozen=True)
class Attack:
    """One registered attack: `fn(model, **fixed, **params)` returns the attacked copy."""

    name: str
    fn: Callable
    main_param: str
    needs: tuple[str, ...] = ()
    side: str = "model"
    aliases: tuple[str, ...] = ()
    fixed: Mapping = field(default_factory=dict)
    example: Mapping = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first sentence of the function's docstring, on one line."""
        paragraph = " ".join((self.fn.__doc__ or "").strip().split("\n\n")[0].split())
        return paragraph.split(". ")[0].rstrip(".")


ATTACKS: dict[str, Attack] = {}
"""Every registered attack by name (register_attack adds to it; get_attack also takes aliases)."""
_ALIASES: dict[str, str] = {}


def register_attack(name: str, *, main_param: str, needs=(), side: str = "model", aliases=(),
                    fixed: Mapping | None = None, example: Mapping | None = None) -> Callable:
    """Registers the decorated function as attack `name` and returns it unchanged.

    `main_param`: the parameter a bare value sets in CLI specs ("prune:0.5" is amount=0.5).
    `needs`: what evaluate() supplies (keys of NEEDS). `side`: "model" or "query".
    `aliases`: other accepted spellings. `fixed`: parameters this name always passes
    (fine_tune registered as "ftll" passes mode="FTLL"). `example`: small parameters the
    shared tests run it with on a 28x28 CNN (besides `fixed` and the needs).
    """
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"name must be a lower-case identifier, got {name!r}")
    needs, aliases = tuple(needs), tuple(aliases)
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ValueError(f"attack {name!r}: needs {unknown} are not among {sorted(NEEDS)}")
    if side not in SIDES:
        raise ValueError(f"attack {name!r}: side must be one of {SIDES}, got {side!r}")
    for spelling in (name, *aliases):
        taken = _ALIASES.get(spelling.lower())
        if taken is not None:
            raise ValueError(f"attack {name!r}: the name {spelling!r} is taken by {taken!r}")

    def register(fn: Callable) -> Callable:
        if main_param not in inspect.signature(fn).parameters:
            raise ValueError(f"attack {name!r}: main_param {main_param!r} is not a parameter "
                             f"of {fn.__name__}")
        ATTACKS[name] = Attack(name, fn, main_param, needs, side, aliases,
                               MappingProxyType(dict(fixed or {})),
                               MappingProxyType(dict(example or {})))
        for spelling in (name, *aliases):
            _ALIASES[spelling.lower()] = name
        return fn

    return register


def get_attack(name: str) -> Attack:
    """The attack registered as `name` or one of its aliases (case and spaces ignored)."""
    if not isinstance(name, str):
        raise TypeError(f"an attack name must be a str, got {type(name).__name__}")
    found = _ALIASES.get(name.strip().lower())
    if found is None:
        raise ValueError(f"unknown attack {name!r}; known: {list_attacks()}")
    return ATTACKS[found]


def list_attacks() -> list[str]:
    """The registered names, sorted."""
    return sorted(ATTACKS)
