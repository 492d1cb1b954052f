"""Stacked attacks: several removal attacks applied one after another, scored as one
(WRT's StackedAttack and "combined" configs, e.g. RTAL then distillation)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stack:
    """Attack specs (names, (name, params) pairs, callables) applied in order; each step gets
    what it needs from the evaluation as if it ran alone. A list in a step's params is a
    sweep, and the stack runs every combination."""

    specs: tuple

    def __post_init__(self):
        if len(self.specs) < 2:
            raise ValueError(f"a stack needs at least two attacks, got {len(self.specs)}")
        for spec in self.specs:
            if isinstance(spec, Stack):
                raise TypeError("a stack's steps are attacks, not stacks: list them in one")


def stack(*specs) -> Stack:
    """``stack("rtal", ("distill", {"epochs": 2}))``: RTAL, then distillation of its result."""
    return Stack(tuple(specs))
