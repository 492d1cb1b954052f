"""Exact binomial tail probabilities, computed in log space.

Watermark verification reports p-values such as P(>= 100 of 100 trigger
matches by chance) = 1e-100, and with more trials these fall far below the
smallest double (~1e-308).  Everything here therefore works with the natural
log of the p-value; ``binomial_p_value`` is a convenience that may underflow
to 0.0, and ``format_p`` prints any log p-value correctly.
"""

from __future__ import annotations

import math
import numbers

from .._checks import check_int, check_probability

__all__ = ["binomial_log_sf", "union_log_sf", "binomial_p_value", "log10_p", "format_p"]

_LN10 = math.log(10.0)

# Terms more than this many nats below the largest one are dropped: each is
# < e^-60 ~ 1e-26 of the sum, so even 1e12 of them cannot change a double.
_CUTOFF_NATS = 60.0


def _log_pmf(j: int, n: int, log_p: float, log_q: float) -> float:
    """log P(X = j) for X ~ Binomial(n, p), with log_q = log(1 - p)."""
    log_choose = math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
    # Skip 0 * log(...) terms so that j == n gives exactly n * log(p).
    tail = (j * log_p if j else 0.0) + ((n - j) * log_q if n - j else 0.0)
    return log_choose + tail


def binomial_log_sf(k: int, n: int, p: float) -> float:
    """Natural log of P(X >= k) for X ~ Binomial(n, p).

    Exact (no normal approximation) and stable for results far below the
    double range, e.g. ``binomial_log_sf(1000, 1000, 0.1) == 1000 * log(0.1)``.
    Returns 0.0 for k <= 0 and -inf for k > n.  Relative accuracy of the
    result is limited by ``math.lgamma`` (about 1e-13 for n ~ 1e3, 1e-10 for
    n ~ 1e6).

    Raises:
        TypeError: k or n is not an int, or p is not a real number.
        ValueError: n < 0, or p not in (0, 1).
    """
    k = check_int("k", k)
    n = check_int("n", n)
    p = check_probability("p", p)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf

    log_p, log_q = math.log(p), math.log1p(-p)
    # The pmf is unimodal, so the largest term with j >= k sits at
    # max(k, mode); sum outward from there and stop once terms are negligible.
    # This keeps the cost O(sqrt(n)) instead of O(n) for large n.
    mode = min(n, max(0, math.floor((n + 1) * p)))
    start = max(k, mode)
    peak = _log_pmf(start, n, log_p, log_q)
    terms = [peak]
    for j in range(start + 1, n + 1):  # upward: decreasing once past the mode
        lp = _log_pmf(j, n, log_p, log_q)
        if lp < peak - _CUTOFF_NATS and j > mode:
            break
        peak = max(peak, lp)
        terms.append(lp)
    for j in range(start - 1, k - 1, -1):  # downward (only when k < mode)
        lp = _log_pmf(j, n, log_p, log_q)
        if lp < peak - _CUTOFF_NATS:
            break
        terms.append(lp)

    top = max(terms)
    result = top + math.log(math.fsum(math.exp(t - top) for t in terms))
    # Rounding can push a sum of probabilities slightly above 1.
    return min(result, 0.0)


def union_log_sf(k: int, n: int, p: float, reads: int = 1) -> float:
    """Natural log of min(1, reads * P(X >= k)), X ~ Binomial(n, p): the union-bound
    (Bonferroni) p-value of the most significant of `reads` reads of the same suspect and
    key, valid whatever the dependence between them. ``reads=1`` is ``binomial_log_sf``."""
    if isinstance(reads, bool) or not isinstance(reads, int) or reads < 1:
        raise ValueError(f"reads must be an int >= 1, got {reads!r}")
    return min(0.0, math.log(reads) + binomial_log_sf(k, n, p))


def binomial_p_value(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p).

    Underflows to 0.0 below ~1e-308; use ``binomial_log_sf`` and ``format_p``
    when the exact magnitude matters.
    """
    return math.exp(binomial_log_sf(k, n, p))


def _check_log_p(log_p: object) -> float:
    if isinstance(log_p, bool) or not isinstance(log_p, numbers.Real):
        raise TypeError(f"log_p must be a float, got {type(log_p).__name__} {log_p!r}")
    log_p = float(log_p)
    if math.isnan(log_p) or log_p > 0.0:
        raise ValueError(f"log_p must be a natural-log probability (<= 0), got {log_p!r}")
    return log_p


def log10_p(log_p: float) -> float:
    """Convert a natural-log p-value to log10 (e.g. -230.26 -> -100.0)."""
    return _check_log_p(log_p) / _LN10


def format_p(log_p: float) -> str:
    """Format a p-value given as its natural log, with two significant digits.

    Works below the double range: ``format_p(-1178.9)`` -> ``"3.2e-512"``.
    Ordinary values print as decimals (``"0.041"``), log_p == 0 as ``"1"``,
    and -inf as ``"0"``.
    """
    log_p = _check_log_p(log_p)
    if log_p == 0.0:
        return "1"
    if log_p == -math.inf:
        return "0"
    l10 = log_p / _LN10
    if l10 >= -3.0:
        return f"{math.exp(log_p):.2g}"
    # Split into mantissa and exponent ourselves: 10**l10 may underflow.
    exponent = math.floor(l10)
    mantissa = round(10.0 ** (l10 - exponent), 1)
    if mantissa >= 10.0:  # e.g. 9.96 rounds up to 10.0 -> 1.0e(exponent+1)
        mantissa, exponent = 1.0, exponent + 1
    return f"{mantissa:.1f}e{exponent}"
