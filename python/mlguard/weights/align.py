"""Bring a suspect model into its owner's coordinates before weights are read.

Permuting hidden units, rescaling them (through ReLU or BatchNorm) and inserting dummy units
change every weight without changing the function (mlguard.attacks.permute, rescale,
add_dummy_units), so a weight-space read of a transformed copy is noise. The owner keeps
the *reference*: the watermarked model they trained. `align` matches the suspect's units
to the reference's, space by space from the input (weight matching by linear assignment,
Ainsworth et al., "Git Re-Basin", ICLR 2023), undoes positive scaling by comparing the
matched units' norms, and drops the suspect's units that match none (extra, dummy units).

The pass from the input matches each space on what is already in the reference's order: a
residual stream is matched from its first producer and its BatchNorms only, since its other
producers and consumers read or write spaces aligned later. `max_iterations` then runs Git
Re-Basin's weight matching (Ainsworth et al. 2023, Sec. 3.2, Algorithm 1): coordinate
descent over the spaces, each re-solved by linear assignment against every producer row and
consumer column (now all in the reference's order), in random order, until a sweep moves no
unit or the bound is reached. Units dropped by the first pass stay dropped.

Matching never uses the tensors a key reads (`exclude`): the permutation that makes an
unrelated model look most like the reference must not be chosen by the watermarked weights
themselves, or it would copy their bits (benchmarks/bench_align_null.py measures the null).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..files.checkpoint import read_checkpoint, strip_prefixes, unwrap
from ..files.model import load_model_file
from ..verification.verdict import state_dict_sha256
from .unit_graph import UnitGraph, UnitSpace, scale_units, take_units, unit_graph

_SCALE_TOL = 1e-3  # |log scale| above this counts as a rescaled unit in the record
MAX_ITERATIONS = 10  # Re-Basin sweeps after the first pass; each costs about one pass


class Reference:
    """The owner's reference model, prepared once: its unit graph, weights and hash.

    ``Reference(model)`` from the module itself, or ``Reference.load(path, arch)`` from a
    model file (read with weights_only; `arch` builds the network, as for trigger keys)."""

    def __init__(self, model: nn.Module, file_sha256: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"reference must be a torch.nn.Module (or a Reference), got "
                            f"{type(model).__name__}")
        self.graph: UnitGraph = unit_graph(model)
        self.state = {k: v.detach().cpu() for k, v in
                      strip_prefixes(model.state_dict(), "the reference").items()}
        self.sha256 = state_dict_sha256(self.state)
        self.file_sha256 = file_sha256

    @classmethod
    def load(cls, path: str | os.PathLike, arch, arch_kwargs: Mapping | None = None) -> Reference:
        model, sha = load_model_file(path, arch, arch_kwargs=arch_kwargs)
        return cls(model, file_sha256=sha)


def as_reference(reference) -> Reference:
    return reference if isinstance(reference, Reference) else Reference(reference)


@dataclass
class Alignment:
    """What `align` did to the suspect, space by space (named by its first layer)."""

    reference_sha256: str
    spaces: dict[str, dict] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # tensors matching did not look at
    max_iterations: int = 0  # the bound on Re-Basin sweeps after the first pass
    iterations: int = 0  # sweeps run (the last one moved nothing when converged)
    converged: bool = True  # False: the bound stopped the sweeps while units still moved

    @property
    def permuted(self) -> int:
        return sum(s["permuted"] for s in self.spaces.values())

    @property
    def rescaled(self) -> int:
        return sum(s["rescaled"] for s in self.spaces.values())

    @property
    def dropped(self) -> int:
        return sum(s["dropped"] for s in self.spaces.values())

    @property
    def matching_cost(self) -> float:
        """Mean over units of 1 - (cosine similarity of matched units): 0 for a copy."""
        units = sum(s["units"] for s in self.spaces.values())
        return sum(s["matching_cost"] * s["units"] for s in self.spaces.values()) / max(units, 1)

    def to_dict(self) -> dict:
        return {"reference_sha256": self.reference_sha256, "units_permuted": self.permuted,
                "units_rescaled": self.rescaled, "units_dropped": self.dropped,
                "matching_cost": round(self.matching_cost, 6), "excluded": list(self.excluded),
                "max_iterations": self.max_iterations, "iterations": self.iterations,
                "converged": self.converged,
                "units_moved_by_iterations": sum(s.get("moved_by_iterations", 0)
                                                 for s in self.spaces.values()),
                "spaces": self.spaces}


@torch.no_grad()
def align(suspect: nn.Module | Mapping | str | os.PathLike, reference,
          exclude: Iterable[str] = (), max_iterations: int = MAX_ITERATIONS
          ) -> tuple[dict[str, torch.Tensor], Alignment]:
    """(the suspect's state_dict in the reference's coordinates, what was done).

    `suspect`: a module, a state_dict or a model file (read with weights_only). `reference`:
    a Reference or the reference nn.Module. `exclude`: tensor names matching must not look
    at (a key's targets). `max_iterations`: the bound on Re-Basin sweeps after the first
    pass (0: the first pass only). Raises ValueError when the suspect is not the reference's
    architecture (a tensor missing, fewer units than the reference, shapes that disagree
    after alignment)."""
    ref = as_reference(reference)
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 0:
        raise ValueError(f"max_iterations must be an int >= 0, got {max_iterations!r}")
    if isinstance(suspect, (str, os.PathLike)):
        state, _ = read_checkpoint(suspect)
    elif isinstance(suspect, nn.Module):
        state = strip_prefixes(suspect.state_dict(), "the suspect")
    elif isinstance(suspect, Mapping):
        state = unwrap(suspect, "the suspect")
    else:
        raise TypeError(f"suspect must be a torch.nn.Module, a state_dict or a model file path, "
                        f"got {type(suspect).__name__}")
    state = {k: v.detach().cpu() for k, v in state.items()}
    missing = sorted(set(ref.state) - set(state))
    if missing:
        raise ValueError(f"the suspect has no tensor {missing[0]!r} of the reference "
                         f"({len(missing)} missing): it is not the reference's architecture")
    exclude = sorted(set(exclude))
    record = Alignment(reference_sha256=ref.sha256, excluded=exclude,
                       max_iterations=max_iterations)
    reads = {c: s.name for s in ref.graph.spaces for c, _ in s.consumers}  # layer -> its input
    done: set[str] = set()
    for space in ref.graph.spaces:
        with _shapes_checked(space):
            record.spaces[space.name] = _align_space(state, ref.state, space, reads, done,
                                                     set(exclude))
        done.add(space.name)
    if len(ref.graph.spaces) > 1:  # one space: the first pass already used everything
        _iterate(state, ref, record, set(exclude), max_iterations)
    for k, v in ref.state.items():
        if state[k].shape != v.shape:
            raise ValueError(f"after alignment the suspect's {k!r} has shape "
                             f"{tuple(state[k].shape)}, the reference's {tuple(v.shape)}: it "
                             "is not the reference's architecture")
    return state, record


class _shapes_checked:
    """Turns the shape errors of a suspect that is not the reference's into a ValueError."""

    def __init__(self, space: UnitSpace):
        self.space = space

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is not None and issubclass(kind, (RuntimeError, IndexError)):
            raise ValueError(f"the suspect's tensors around layer {self.space.name!r} do not "
                             f"fit the reference's architecture ({kind.__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from None
        return False


def _align_space(state, ref_state, space: UnitSpace, reads, done, exclude) -> dict:
    n_ref = space.size
    n_sus = int(state[f"{space.producers[0]}.weight"].shape[0])
    if n_sus < n_ref:
        raise ValueError(f"the suspect's layer {space.producers[0]!r} has {n_sus} units, the "
                         f"reference's {n_ref}: a copy has at least the reference's units")
    producers = [p for p in space.producers if p not in reads or reads[p] in done]
    consumers = [(c, k) for c, k in space.consumers if c in space.fixed_by_output]
    index, scale, matched = _match(state, ref_state, space, producers, consumers, exclude,
                                   n_sus)
    take_units(state, space, index)
    rescaled = int((scale.log().abs() > _SCALE_TOL).sum())
    if rescaled:
        scale_units(state, space, 1 / scale)
    return {"units": n_ref, "suspect_units": n_sus, "dropped": n_sus - n_ref,
            "permuted": int((index != torch.arange(n_ref)).sum()), "rescaled": rescaled,
            "matching_cost": round(float(1 - matched.mean()), 6)}


def _match(state, ref_state, space: UnitSpace, producers, consumers, exclude, n_sus):
    """(index, scale, matched similarity): the suspect's unit index[i] is the reference's
    unit i, scale[i] its size relative to it, from the given producers' rows, the space's
    BatchNorms and the given consumers' columns (less what `exclude` names)."""
    n_ref = space.size
    # Unit features: scaled with the unit (out), inversely (back), or not at all (plain).
    out, plain = [], []
    carries = space.rescale_at
    for p in producers:
        rows = [t for t in (f"{p}.weight", f"{p}.bias") if t in ref_state and t not in exclude]
        (out if carries == "producers" else plain).extend(rows)
    for m in space.norms:
        affine = [t for t in (f"{m}.weight", f"{m}.bias") if t in ref_state and t not in exclude]
        (out if carries == "norms" else plain).extend(affine)
        plain.extend(t for t in (f"{m}.running_mean",) if t not in exclude)
    cols = [(c, k) for c, k in consumers if f"{c}.weight" not in exclude]
    pairs = [(_unit_rows(ref_state, out, n_ref), _unit_rows(state, out, n_sus)),
             (_unit_cols(ref_state, cols, n_ref), _unit_cols(state, cols, n_sus)),
             (_unit_rows(ref_state, plain, n_ref), _unit_rows(state, plain, n_sus))]
    usable = [(a, b) for a, b in pairs if a is not None and a.shape[1] >= 2]
    if not usable:
        raise ValueError(f"cannot align the units of {space.name!r}: every tensor that tells "
                         f"them apart is excluded ({sorted(exclude)}) or missing")
    similarity = sum(_cosine(a) @ _cosine(b).T for a, b in usable) / len(usable)
    _, index = linear_sum_assignment(similarity.numpy(), maximize=True)
    index = torch.as_tensor(index, dtype=torch.long)
    matched = similarity[torch.arange(n_ref), index]
    scale = torch.ones(n_ref, dtype=torch.float64)
    if carries in ("producers", "norms"):
        scale = _scales(pairs[0], pairs[1], index)
    return index, scale, matched


def _iterate(state, ref: Reference, record: Alignment, exclude, max_iterations: int) -> None:
    """Re-Basin's coordinate descent (Algorithm 1) on the first pass's result: each space
    re-matched on all its producers' rows and consumers' columns, the others held fixed, in
    a random order per sweep (seeded: a verdict is reproducible), until a sweep moves no
    unit. A move re-estimates the moved units' scales against their new partners."""
    order = torch.Generator().manual_seed(0)
    spaces = ref.graph.spaces
    record.converged = max_iterations == 0
    for sweep in range(max_iterations):
        record.iterations = sweep + 1
        moved_any = False
        for i in torch.randperm(len(spaces), generator=order).tolist():
            space = spaces[i]
            with _shapes_checked(space):
                index, scale, matched = _match(state, ref.state, space, space.producers,
                                               space.consumers, exclude, space.size)
                moved = int((index != torch.arange(space.size)).sum())
                entry = record.spaces[space.name]
                entry["matching_cost"] = round(float(1 - matched.mean()), 6)
                if not moved:
                    continue
                moved_any = True
                take_units(state, space, index)
                entry["moved_by_iterations"] = entry.get("moved_by_iterations", 0) + moved
                if (scale.log().abs() > _SCALE_TOL).any():
                    scale_units(state, space, 1 / scale)
        if not moved_any:
            record.converged = True
            break


def _unit_rows(state, names, n) -> torch.Tensor | None:
    """(n, d): the named tensors' rows, one per unit, side by side (float64)."""
    parts = [state[t].double().reshape(n, -1) for t in names]
    return torch.cat(parts, dim=1) if parts else None


def _unit_cols(state, consumers, n) -> torch.Tensor | None:
    """(n, d): each unit's columns (a block of k after a flatten) in the consumers."""
    parts = []
    for c, k in consumers:
        w = state[f"{c}.weight"].double()
        parts.append(w.reshape(w.shape[0], n, k, -1).transpose(0, 1).reshape(n, -1))
    return torch.cat(parts, dim=1) if parts else None


def _cosine(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _scales(out_pair, back_pair, index) -> torch.Tensor:
    """Each matched unit's scale, suspect / reference: from the features that scale with it
    and (inverted) from those that scale against it; their geometric mean if both exist."""
    logs = []
    for (ref, sus), sign in ((out_pair, 1), (back_pair, -1)):
        if ref is None:
            continue
        r, s = ref.norm(dim=1), sus[index].norm(dim=1)
        ok = (r > 0) & (s > 0)
        logs.append(torch.where(ok, sign * (s.clamp_min(1e-300).log() - r.clamp_min(1e-300).log()),
                                torch.zeros_like(r)))
    if not logs:
        return torch.ones(len(index), dtype=torch.float64)
    return torch.exp(sum(logs) / len(logs))

