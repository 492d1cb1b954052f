"""The trigger mixer's retention check: the key read from the model exactly as verify() reads
it, judged with verify()'s test at verify()'s alpha, so that "would be detected" here means
what a verdict would say (issue 18: a key that does not take must not go unnoticed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..keys import TriggerKey
from ..verification.stats import binomial_log_sf
from ..verification.verify import pattern_votes, trigger_predictions


@dataclass(frozen=True)
class RetentionCheck:
    """One check: after `step` mixer steps and `views` views per trigger (pattern-mode keys:
    per pattern) on all ranks, the model answered `matches` of `total` with the key's label
    (pattern mode: pattern votes); `needed` is the fewest matches verify() detects at `alpha`
    (total + 1 when no count can be). `per_batch` is the mixer's value after the check;
    `raised_from` the value before it when the check raised it."""

    step: int
    views: float
    matches: int
    total: int
    needed: int
    alpha: float
    detected: bool
    per_batch: int
    raised_from: int | None = None

    @property
    def retention(self) -> float:
        return self.matches / self.total

    def __str__(self) -> str:
        need = (f"{self.needed}/{self.total}" if self.needed <= self.total
                else f"more than the key's {self.total} (none can be)")
        state = "detected" if self.detected else "NOT detected"
        return (f"step {self.step} ({self.views:.1f} views per trigger): {self.matches}/"
                f"{self.total} matched (retention {self.retention:.0%}), {state} at alpha "
                f"{self.alpha:g} (needs {need})")


def needed_matches(total: int, chance: float, alpha: float) -> int:
    """The fewest matches out of `total` whose exact binomial p-value is below `alpha`: the
    same comparison (in log space) as make_verdict; total + 1 when none is."""
    log_alpha = math.log(alpha)
    for k in range(total + 1):
        if binomial_log_sf(k, total, chance) < log_alpha:
            return k
    return total + 1


def read_key(model: torch.nn.Module, key: TriggerKey) -> tuple[int, int]:
    """(matches, total) as verify(model, key) counts them (same inputs, eval mode, no
    gradients). Every submodule's train/eval flag is restored as it was (not only the top
    module's, which verify restores), so frozen BatchNorm layers stay frozen."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        preds, labels, _, _ = trigger_predictions(model, key)
    finally:
        for module, training in modes:
            module.training = training
    if key.mode == "pattern":
        votes, _ = pattern_votes(preds, key)
        return int((votes.cpu() == key.targets).sum()), key.patterns
    return int((preds == labels).sum()), key.size
