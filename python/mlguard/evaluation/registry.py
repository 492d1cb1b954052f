"""Attack names for evaluate() and the CLI, and how a (name, params) spec with sweeps
expands into single runs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import attacks
from ..keys import TriggerKey, WeightKey

# name -> (function, fixed params, needs attacker data)
ATTACKS: dict[str, tuple[Callable, dict, bool]] = {
    "ftll": (attacks.fine_tune, {"mode": "FTLL"}, True),
    "ftal": (attacks.fine_tune, {"mode": "FTAL"}, True),
    "rtll": (attacks.fine_tune, {"mode": "RTLL"}, True),
    "rtal": (attacks.fine_tune, {"mode": "RTAL"}, True),
    "fine_tune": (attacks.fine_tune, {}, True),
    "prune": (attacks.prune, {}, False),
    "fine_prune": (attacks.fine_prune, {}, True),
    "quantize": (attacks.quantize, {}, False),
    "cast": (attacks.cast, {}, False),
    "weight_noise": (attacks.weight_noise, {}, False),
    "distill": (attacks.distill, {}, True),
    "overwrite": (attacks.overwrite, {}, True),
    "jpeg": (attacks.jpeg, {}, False),
    "blur": (attacks.blur, {}, False),
    "permute": (attacks.permute, {}, False),
    "rescale": (attacks.rescale, {}, False),
    "add_dummy_units": (attacks.add_dummy_units, {}, False),
}
ALIASES = {"noise": "weight_noise", "fineprune": "fine_prune", "fine-prune": "fine_prune",
           "fine-tune": "fine_tune", "finetune": "fine_tune", "quant": "quantize",
           "dummy": "add_dummy_units"}
# the parameter a bare value sets in "name:value" (CLI) specs
MAIN_PARAM = {"prune": "amount", "fine_prune": "amount", "quantize": "bits", "cast": "dtype",
              "weight_noise": "sigma", "jpeg": "quality", "blur": "sigma", "distill": "epochs",
              "ftll": "epochs", "ftal": "epochs", "rtll": "epochs", "rtal": "epochs",
              "fine_tune": "mode", "overwrite": "epochs", "permute": "seed", "rescale": "seed",
              "add_dummy_units": "n"}
QUERY_SIDE = ("jpeg", "blur")


@dataclass
class Run:
    """One attack to run: `name` as reported, the function, its parameters."""

    name: str
    fn: Callable
    params: dict = field(default_factory=dict)
    needs_data: bool = False

    @property
    def label(self) -> str:
        shown = {k: _short(v) for k, v in self.params.items()
                 if k not in ("data", "mean", "std")}
        return ", ".join(f"{k}={v}" for k, v in shown.items())


def _short(value) -> str:
    if isinstance(value, TriggerKey):
        return f"{value.kind} trigger key {value.key_id[:8]}"
    if isinstance(value, WeightKey):
        return f"weight key {value.key_id[:8]}"
    return str(value)


def canonical(name: str) -> str:
    low = name.strip().lower()
    low = ALIASES.get(low, low)
    if low not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
    return low


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
        name = canonical(what)
        fn, fixed, needs_data = ATTACKS[name]
        base = dict(fixed)
    elif callable(what):
        name, fn, base, needs_data = getattr(what, "__name__", "custom"), what, {}, False
    else:
        raise TypeError(f"attacks[{index}]: the attack must be a name or a callable, got "
                        f"{type(what).__name__}")
    swept = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    for k, v in swept.items():
        if not v:
            raise ValueError(f"attacks[{index}] ({name}): sweep {k}=[] is empty")
    runs = []
    for values in itertools.product(*swept.values()):
        runs.append(Run(name, fn, {**base, **dict(zip(swept, values))}, needs_data))
    return runs


def parse_cli(text: str) -> list[tuple[str, dict]]:
    """ "ftal,prune:0.5,prune:0.9,quantize:4,jpeg:50,distill" -> [(name, params), ...].
    A value after ':' sets the attack's main parameter (MAIN_PARAM); k=v pairs after
    further ':' set others, e.g. "fine_prune:0.5:epochs=2"."""
    specs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty attack in {text!r}")
        name, *rest = item.split(":")
        name = canonical(name)
        params: dict = {}
        for j, part in enumerate(rest):
            if "=" in part:
                k, v = part.split("=", 1)
            elif j == 0:
                k, v = MAIN_PARAM[name], part
            else:
                raise ValueError(f"attack {item!r}: write extra parameters as key=value")
            params[k.strip()] = _number(v.strip())
        specs.append((name, params))
    return specs


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
