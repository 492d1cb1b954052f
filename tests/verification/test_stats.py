"""Tests for mlguard.verification.stats: exact binomial tails in log space."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from scipy.stats import binom

from mlguard.verification.stats import binomial_log_sf, binomial_p_value, format_p, log10_p

LN10 = math.log(10.0)


def _exact_log_sf(k: int, n: int, p: Fraction) -> float:
    """log P(X >= k) with exact rational arithmetic (independent reference)."""
    q = 1 - p
    total = sum(math.comb(n, j) * p**j * q ** (n - j) for j in range(k, n + 1))
    # math.log accepts arbitrarily large ints, so this never underflows.
    return math.log(total.numerator) - math.log(total.denominator)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 100, 250])
@pytest.mark.parametrize("p", [0.001, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
def test_matches_scipy_moderate(n: int, p: float) -> None:
    for k in sorted({0, 1, 2, n // 3, n // 2, n - 1, n} | set(range(0, n + 1, 7))):
        expected = binom.sf(k - 1, n, p)
        if expected < 1e-290:  # scipy underflows; covered by the exact tests
            continue
        assert binomial_p_value(k, n, p) == pytest.approx(expected, rel=1e-9, abs=0), (k, n, p)
        assert binomial_log_sf(k, n, p) == pytest.approx(math.log(expected), rel=1e-9, abs=1e-12)


def test_large_n_against_scipy() -> None:
    # Exercises the early-stopping summation on both sides of the mode.
    n, p = 100_000, 0.1
    for k in (1, 9_000, 10_000, 10_250, 10_500, 11_000):
        expected = math.log(binom.sf(k - 1, n, p))
        assert binomial_log_sf(k, n, p) == pytest.approx(expected, rel=1e-7, abs=1e-9), k


def test_all_matches_is_exact_power() -> None:
    log_p = binomial_log_sf(1000, 1000, 0.1)
    assert log_p == 1000 * math.log(0.1)
    assert log10_p(log_p) == pytest.approx(-1000.0, abs=1e-9)
    assert binomial_p_value(1000, 1000, 0.1) == 0.0  # underflows, by design


def test_far_below_double_range() -> None:
    n, p = 5000, 0.01
    values = [binomial_log_sf(k, n, p) for k in range(3990, 4011)]
    assert all(math.isfinite(v) for v in values)
    assert all(log10_p(v) < -300 for v in values)
    assert all(a > b for a, b in zip(values, values[1:])), "must decrease strictly in k"
    exact = _exact_log_sf(4000, n, Fraction(1, 100))
    assert binomial_log_sf(4000, n, p) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("k,n,p", [(3, 10, 0.25), (60, 100, 0.5), (97, 100, 0.1)])
def test_matches_exact_rational(k: int, n: int, p: float) -> None:
    assert binomial_log_sf(k, n, p) == pytest.approx(_exact_log_sf(k, n, Fraction(p)), rel=1e-10)


def test_edges() -> None:
    assert binomial_log_sf(0, 10, 0.3) == 0.0
    assert binomial_log_sf(-5, 10, 0.3) == 0.0
    assert binomial_log_sf(0, 0, 0.3) == 0.0
    assert binomial_log_sf(11, 10, 0.3) == -math.inf
    assert binomial_log_sf(1, 0, 0.3) == -math.inf
    assert binomial_p_value(11, 10, 0.3) == 0.0
    assert binomial_log_sf(1, 1, 0.5) == math.log(0.5)
    assert binomial_log_sf(1, 10, 0.999999) <= 0.0  # never positive


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((1.5, 10, 0.5), TypeError, r"k must be an int, got float 1\.5"),
        ((True, 10, 0.5), TypeError, r"k must be an int, got bool"),
        ((1, 10.0, 0.5), TypeError, r"n must be an int, got float 10\.0"),
        ((1, -1, 0.5), ValueError, r"n must be >= 0, got -1"),
        ((1, 10, 0.0), ValueError, r"p must be in the open interval \(0, 1\), got 0\.0"),
        ((1, 10, 1.0), ValueError, r"p must be in .*got 1\.0"),
        ((1, 10, float("nan")), ValueError, r"p must be in .*got nan"),
        ((1, 10, "0.5"), TypeError, r"p must be a float, got str '0\.5'"),
    ],
)
def test_bad_inputs(args: tuple, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        binomial_log_sf(*args)
    with pytest.raises(exc, match=match):
        binomial_p_value(*args)


def test_format_p() -> None:
    assert format_p(0.0) == "1"
    assert format_p(-math.inf) == "0"
    assert format_p(math.log(0.041)) == "0.041"
    assert format_p(math.log(0.5)) == "0.5"
    assert format_p(math.log(0.0012)) == "0.0012"
    assert format_p(math.log(3.1e-95)) == "3.1e-95"
    assert format_p(math.log(3.2) - 512 * LN10) == "3.2e-512"
    assert format_p(1000 * math.log(0.1)) == "1.0e-1000"
    assert format_p(binomial_log_sf(100, 100, 0.1)) == "1.0e-100"
    assert format_p(math.log(9.96e-50)) == "1.0e-49"  # mantissa rounding carries


def test_log10_p() -> None:
    assert log10_p(0.0) == 0.0
    assert log10_p(math.log(1e-5)) == pytest.approx(-5.0)
    assert log10_p(-math.inf) == -math.inf


@pytest.mark.parametrize("fn", [format_p, log10_p])
def test_log_p_validation(fn) -> None:
    with pytest.raises(ValueError, match=r"log_p must be .*<= 0.*got 0\.5"):
        fn(0.5)
    with pytest.raises(ValueError, match=r"log_p .*got nan"):
        fn(float("nan"))
    with pytest.raises(TypeError, match=r"log_p must be a float, got str"):
        fn("-3")
