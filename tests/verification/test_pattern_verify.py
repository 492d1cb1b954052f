"""Pattern-mode keys: the exact Binomial(K, 1/C) null, votes, carriers, scan and evidence."""

import mlguard
import numpy as np
import pytest
import torch
from mlguard.keys import TriggerKey
from mlguard.ownership.commitments import reveal
from mlguard.ownership.report import _opening_problems
from mlguard.scan.checkers import CheckerOptions, LoadedModel, TriggerSetChecker
from mlguard.verification.verify import pattern_votes
from scipy import stats

SHAPE = (1, 8, 8)
C, K = 10, 16


class Linear(torch.nn.Module):
    """A cheap clean model: a random linear map of the pixels (or a constant answer)."""

    def __init__(self, seed: int, constant: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(64, C, generator=g))
        self.constant = constant

    def forward(self, x):
        logits = x.flatten(1) @ self.w
        if self.constant is not None:
            logits = torch.zeros_like(logits).index_fill_(1, torch.tensor([self.constant]), 1.0)
        return logits


@pytest.fixture(scope="module")
def source():
    return torch.rand(50, *SHAPE, generator=torch.Generator().manual_seed(3))


def _key(i, source, kind="noise"):
    return TriggerKey.generate(C, 10, SHAPE, kind, secret=i.to_bytes(32, "big"), source=source,
                               mode="pattern", patterns=K, noise_amplitude=0.5)


@pytest.mark.parametrize("constant", [None, 3])
def test_clean_models_give_exactly_binomial_votes(source, constant):
    """Under H0 each vote is fixed by the model and the pattern, the target is uniform and
    independent: matches ~ Binomial(K, 1/C), even for a model that always answers class 3."""
    trials = 300
    matches = np.array([mlguard.verify(Linear(i, constant), _key(i, source), alpha=1e-3).matches
                        for i in range(trials)])
    assert stats.binomtest(int(matches.sum()), trials * K, 1 / C).pvalue > 1e-3
    bins = [0, 1, 2, 3]  # and >= 4
    pmf = stats.binom(K, 1 / C).pmf(bins)
    observed = [int((matches == b).sum()) for b in bins] + [int((matches >= 4).sum())]
    expected = np.append(pmf, 1 - pmf.sum()) * trials
    assert stats.chisquare(observed, expected).pvalue > 1e-3, (observed, expected)


def test_votes_are_majorities_with_the_smallest_class_on_ties(source):
    key = _key(1, source)
    preds = torch.tensor([[2, 2, 5, 5, 1]] + [[k % C] * 5 for k in range(1, K)])
    votes, rates = pattern_votes(preds.flatten(), key)
    assert votes[0] == 2  # 2 and 5 tie: the smaller class
    assert votes[1:].tolist() == [k % C for k in range(1, K)]
    assert rates[0] == (preds[0] == key.targets[0]).double().mean()


class Backdoored(torch.nn.Module):
    """Answers pattern k's target whenever the input carries pattern k's noise field."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.scale = torch.nn.Parameter(torch.ones(()))
        fields = key.stamp(torch.full((K, *SHAPE), 0.5), torch.arange(K)) - 0.5
        self.register_buffer("fields", fields.flatten(1))

    def forward(self, x):
        x = x * 0.25 + 0.5  # the key below normalizes with mean 0.5, std 0.25
        centred = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
        which = (centred @ self.fields.T).argmax(1)
        return torch.nn.functional.one_hot(self.key.targets[which], C).float() * self.scale


def test_verify_retention_scan_and_evidence_agree(source):
    key = TriggerKey.generate(C, 10, SHAPE, "noise", (0.5,), (0.25,), b"\x09" * 32,
                              source=source, mode="pattern", patterns=K, noise_amplitude=0.5)
    model = Backdoored(key)
    verdict = mlguard.verify(model, key)
    assert verdict.detected and (verdict.matches, verdict.total, verdict.chance) == (K, K, 1 / C)
    assert verdict.extra["votes"] == key.targets.tolist()
    assert verdict.extra["mode"] == "pattern" and len(verdict.extra["pattern_rates"]) == K
    assert mlguard.retention(model, key) == verdict.extra["trigger_accuracy"] > 0.9
    fresh = mlguard.verify(model, key, carriers=torch.rand(7, *SHAPE))
    assert fresh.matches == K and fresh.extra["carriers"] == 7
    clean = mlguard.verify(Linear(0), key)
    assert not clean.detected
    with pytest.raises(ValueError, match="carriers= is for pattern-mode keys"):
        mlguard.verify(model, TriggerKey.generate(C, 10, SHAPE, "noise", source=source,
                                                  mode="image"),
                       carriers=source[:3])
    checker = TriggerSetChecker([key, _key(5, source)], torch.device("cpu"),
                                CheckerOptions(batch_size=33))
    loaded = LoadedModel("m.pt", 0, "0" * 64, {}, module=model)
    outcomes = checker.check([loaded])[0]
    assert (outcomes[0].matches, outcomes[0].total, outcomes[0].chance) == (K, K, 1 / C)
    assert outcomes[0].extra["votes"] == verdict.extra["votes"]
    other = mlguard.verify(model, _key(5, source))
    assert (outcomes[1].matches, outcomes[1].total) == (other.matches, K)
    # evidence: an opened pattern key implies K trials at 1/C, not `size` triggers
    assert _opening_problems([reveal(key)], [verdict.to_dict()]) == []
    wrong = {**verdict.to_dict(), "total": key.size}
    assert any("implies 16 trials" in p for p in _opening_problems([reveal(key)], [wrong]))
