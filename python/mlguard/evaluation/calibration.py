"""Is the false-positive rate what the verdicts claim? Match counts of models that never saw
a key against the exact null distribution, Binomial(n, chance)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class BinomialFit:
    """Pearson's chi-square goodness of fit of match counts to Binomial(n, chance)."""

    samples: int
    n: int
    chance: float
    mean: float
    expected_mean: float
    variance: float
    expected_variance: float
    chi2: float
    dof: int
    p_value: float  # of the goodness-of-fit test: small means the counts are not binomial
    bins: list[tuple[int, int, int, float]]  # (low, high, observed, expected), merged bins

    def to_dict(self) -> dict:
        return asdict(self)


def binomial_fit(counts: Sequence[int], n: int, chance: float,
                 min_expected: float = 5.0) -> BinomialFit:
    """Chi-square test of `counts` (one per independent verification, each over `n` trials)
    against Binomial(n, chance). Neighbouring outcomes are merged until every bin expects
    at least `min_expected` counts (Cochran's rule); the two tails go into the end bins."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"counts must be a 1-d sequence of at least 2 match counts, got "
                         f"shape {counts.shape}")
    if counts.min() < 0 or counts.max() > n:
        raise ValueError(f"counts must lie in [0, n={n}], got range "
                         f"[{counts.min()}, {counts.max()}]")
    if not 0 < chance < 1:
        raise ValueError(f"chance must be in (0, 1), got {chance!r}")
    pmf = stats.binom.pmf(np.arange(n + 1), n, chance) * counts.size
    observed = np.bincount(counts, minlength=n + 1).astype(np.float64)
    bins, low, exp_acc, obs_acc = [], 0, 0.0, 0.0
    for k in range(n + 1):
        exp_acc += pmf[k]
        obs_acc += observed[k]
        if exp_acc >= min_expected:
            bins.append([low, k, obs_acc, exp_acc])
            low, exp_acc, obs_acc = k + 1, 0.0, 0.0
    if bins:  # the upper tail joins the last bin
        bins[-1][1], bins[-1][2], bins[-1][3] = n, bins[-1][2] + obs_acc, bins[-1][3] + exp_acc
    else:
        bins = [[0, n, obs_acc, exp_acc]]
    obs = np.array([b[2] for b in bins])
    exp = np.array([b[3] for b in bins])
    if len(bins) >= 2:
        exp = exp * obs.sum() / exp.sum()  # pmf sums to 1 up to rounding
        chi2, p = stats.chisquare(obs, exp)
        dof = len(bins) - 1
    else:
        chi2, p, dof = 0.0, 1.0, 0
    return BinomialFit(
        samples=int(counts.size), n=int(n), chance=float(chance), mean=float(counts.mean()),
        expected_mean=float(n * chance), variance=float(counts.var(ddof=1)),
        expected_variance=float(n * chance * (1 - chance)), chi2=float(chi2), dof=int(dof),
        p_value=float(p),
        bins=[(int(b[0]), int(b[1]), int(b[2]), float(b[3])) for b in bins])
