"""evaluate(): run attacks on a watermarked model and score each attacked model itself."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks._data import Batches, device_of
from ..schemes.base import SCHEMES, scheme_of
from ..verification import verify
from .registry import Run, expand
from .report import RobustnessReport, Row


def evaluate(model: nn.Module, keys, attacks, attacker_data=None, test_data=None, *,
             alpha: float = 1e-6, attacker: str | None = None, progress: bool | None = None,
             seed: int = 0, reference: nn.Module | None = None) -> RobustnessReport:
    """Runs every attack on `model` and verifies every key on each attacked model.

    `keys`: a key, a list of keys, or a {name: key} mapping. `attacks`: names ("ftal",
    "prune", ...), (name, params) pairs, callables model -> model, or (callable, params);
    a list value in params is a sweep (`("prune", {"amount": [0.1, 0.5, 0.9]})`).
    `attacker_data` is what data-using attacks train on (None if no attack uses data);
    `test_data` gives the accuracy; both are a DataLoader, a Dataset or an (x, y) pair as
    the model takes them.
    `attacker` describes the attacker's data in the report (default: its size).

    Query-side attacks (jpeg, blur) get the trigger keys' mean/std unless given; overwrite
    without a `key` gets a fresh attacker key (abstract triggers shaped like the first
    trigger key, or a weight key on the first weight key's targets). The first rows are the
    unattacked model's. Attacks never change `model`; it is left in eval mode.
    `reference` (e.g. `model` itself): each weight key gets a second row per attacked
    model, key "<name>+reference", read after aligning to it (weights/align.py), beside
    the plain read; what permute / rescale / add_dummy_units do to each shows side by side.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = _named_keys(keys)
    if reference is not None:
        from ..weights.align import as_reference
        reference = as_reference(reference)  # traced and hashed once
    if isinstance(attacks, (str, tuple)) or callable(attacks):
        attacks = [attacks]
    runs = [r for i, spec in enumerate(attacks) for r in expand(spec, i)]
    test_batches = Batches(test_data, batch_size=512, shuffle=False, name="test_data")
    users = [r.name for r in runs if any("data" in s.needs for s in (r, *r.steps))]
    if attacker_data is None:
        if users:
            raise ValueError(f"attacker_data is None, but attacks {users} train on the "
                             "attacker's data: give a DataLoader, a Dataset or an (x, y) pair")
        described = "no data (no attack here uses any)"
    else:
        described = f"{Batches(attacker_data, seed=seed, name='attacker_data').describe()}"
    for run in runs:
        _complete(run, named, attacker_data)
    model.eval()
    base_accuracy = accuracy(model, test_batches)
    rows = _score(model, named, "none", "", base_accuracy, base_accuracy, 0.0, {}, alpha,
                  reference)
    # progress None: a bar only on a terminal (tqdm's disable=None)
    bar = tqdm(runs, desc="attacks", unit="attack",
               disable=None if progress is None else not progress)
    for run in bar:
        bar.set_postfix_str(f"{run.name} {run.label}"[:60])
        start = time.perf_counter()
        attacked = run(model)
        seconds = time.perf_counter() - start
        if not isinstance(attacked, nn.Module):
            raise TypeError(f"attack {run.name} returned {type(attacked).__name__}, not a model")
        if attacked is model:
            raise ValueError(f"attack {run.name} returned its input: attacks must return a "
                             "new model")
        attacked.eval()
        acc = accuracy(attacked, test_batches)
        rows += _score(attacked, named, run.name, run.label, acc, base_accuracy, seconds,
                       getattr(attacked, "attack_info", {}), alpha, reference)
    return RobustnessReport(rows=rows, alpha=alpha, base_accuracy=base_accuracy,
                            attacker=attacker or described,
                            test=test_batches.describe())


@torch.inference_mode()
def accuracy(model: nn.Module, batches: Batches) -> float:
    """The fraction of `batches`' examples the model labels correctly (in the mode it is in)."""
    device = device_of(model)
    correct = total = 0
    for x, y in batches:
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        total += len(y)
    return correct / total


def _is_key(value) -> bool:
    try:
        scheme_of(value)
    except TypeError:
        return False
    return True


def _named_keys(keys) -> dict:
    if _is_key(keys):
        keys = [keys]
    if isinstance(keys, Mapping):
        named = dict(keys)
    elif isinstance(keys, (list, tuple)):
        named = {}
        for k in keys:
            base = scheme_of(k).nickname(k) if _is_key(k) else type(k).__name__
            name, n = base, 1
            while name in named:
                n += 1
                name = f"{base}#{n}"
            named[name] = k
    else:
        raise TypeError(f"keys must be a key, a list of keys or a {{name: key}} dict, got "
                        f"{type(keys).__name__}")
    if not named:
        raise ValueError("keys is empty: give at least one key (TriggerKey, WeightKey, ...)")
    for name, k in named.items():
        if not _is_key(k):
            known = " or ".join(s.key_type.__name__ for s in SCHEMES.values())
            raise TypeError(f"keys[{name!r}] must be a {known}, got {type(k).__name__}")
    return named


def _complete(run: Run, keys: dict, attacker_data) -> None:
    """Fills in what a run needs from the evaluation (its registry entry's `needs`); a
    stacked run, each of its steps."""
    for step in run.steps:
        _complete(step, keys, attacker_data)
    for need in run.needs:
        PROVIDERS[need](run, keys, attacker_data)


def _give_data(run: Run, keys: dict, attacker_data) -> None:
    run.params.setdefault("data", attacker_data)


def _give_normalization(run: Run, keys: dict, attacker_data) -> None:
    if "mean" in run.params or "std" in run.params:
        return
    norms = {scheme_of(k).input_normalization(k) for k in keys.values()} - {None}
    if len(norms) > 1:
        raise ValueError(f"{run.name}: the trigger keys use different normalizations "
                         f"{sorted(norms, key=str)}; give mean= and std= in its params")
    if norms:
        run.params["mean"], run.params["std"] = next(iter(norms))


def _give_key(run: Run, keys: dict, attacker_data) -> None:
    if "key" not in run.params:
        run.params["key"] = thief_key(keys)


def _first_key(keys: dict):
    order = {scheme: i for i, scheme in enumerate(SCHEMES.values())}
    return min(keys.values(), key=lambda k: order[scheme_of(k)])  # min keeps the first tie


def _context(hook) -> set[str]:
    return {"model", "data"} & set(inspect.signature(hook).parameters)


def attacker_key(keys: dict, *, model=None, data=None):
    """A fresh key for the thief, made by the scheme of the first key whose scheme comes
    first in registration order (Scheme.attacker_key): abstract triggers like the first
    trigger key's, else a weight key on the first weight key's targets, ... Schemes whose
    keys come from a model and data (frontier stitching, blackmarks, EWE) get the stolen
    `model` and the attacker's `data` ((x, y) as the model takes them)."""
    first = _first_key(keys)
    hook = scheme_of(first).attacker_key
    given = {"model": model, "data": data}
    return hook(first, **{name: given[name] for name in _context(hook)})


def thief_key(keys: dict):
    """What the overwrite attack gets as key=: attacker_key(keys) where the scheme makes
    one from nothing, else a KeyMaker the attack calls with the model it steals and the
    attacker's samples."""
    first = _first_key(keys)
    if _context(scheme_of(first).attacker_key):
        return KeyMaker(keys)
    return attacker_key(keys)


class KeyMaker:
    """The thief's fresh key, made when the overwrite attack calls it with the stolen model
    and the attacker's (x, y) samples (attacker_key(keys, model=, data=))."""

    def __init__(self, keys: dict):
        self.keys = dict(keys)

    def __call__(self, *, model, data):
        return attacker_key(self.keys, model=model, data=data)

    def __str__(self) -> str:
        return f"a fresh {scheme_of(_first_key(self.keys)).name} key of the thief's"


# one provider per need an attack may declare (attacks/registry.py NEEDS)
PROVIDERS = {"data": _give_data, "normalization": _give_normalization, "key": _give_key}


def _score(model, keys, attack, params, acc, base, seconds, info, alpha,
           reference=None) -> list[Row]:
    rows = []
    reads = [(name, key, None) for name, key in keys.items()]
    if reference is not None:
        reads += [(f"{name}+reference", key, reference) for name, key in keys.items()
                  if scheme_of(key).aligns_to_reference]
    for name, key, ref in reads:
        v = verify(model, key, alpha=alpha, reference=ref)
        rows.append(Row(attack=attack, params=params, key=name,
                        scheme=v.scheme,
                        accuracy=acc, accuracy_change=acc - base, matches=v.matches,
                        total=v.total, p_value=v.p_value,
                        log10_p=v.log_p_value / math.log(10), detected=v.detected,
                        seconds=seconds, info=_plain(info)))
    return rows


def _plain(info: dict) -> dict:
    """attack_info as JSON-safe values (lists of channels, numbers, strings)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (bool, int, float, str)) else
                      _plain(x) if isinstance(x, dict) else str(x) for x in v]
        else:
            out[k] = str(v)
    return out
