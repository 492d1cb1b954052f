"""Argument checks for the whole package, with one policy:

- bool is refused wherever a number is expected (True as a count is almost surely a bug);
- integers of any kind are accepted (int, numpy integers, 0-d integral tensors: anything
  with __index__) and returned as int; reals are ints, floats and numpy floating scalars,
  returned as float;
- a wrong type raises TypeError, a value out of range (NaN included) ValueError, both
  naming the argument and showing its value.

The TypeError raised is an ArgumentTypeError, which is also a ValueError: many of these
APIs raised ValueError for a wrong type before, and callers that catch ValueError (the CLI
verbs turn it into exit status 2) keep working.
"""

from __future__ import annotations

import math
import numbers
import operator

__all__ = ["ArgumentTypeError", "check_int", "check_real", "check_fraction",
           "check_probability"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (see the module's policy)."""


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str | None:
    if low is not None and high is not None:
        if low_open and high_open:
            return f"in the open interval ({low}, {high})"
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return None


def _wrong_type(name: str, kind: str, value) -> ArgumentTypeError:
    return ArgumentTypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (either bound may be None)."""
    number = None
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if number is None:
        raise _wrong_type(name, "an int", value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be an int {_range(low, high)}, got {number}")
    return number


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, finite: bool = True,
               noun: str | None = "a number") -> float:
    """`value` as a float within the bounds (open or closed; None: unbounded); NaN is always
    refused, infinities unless finite=False. `noun` names what is wanted in the message
    ("lr must be a number > 0")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_type(name, "a float", value)
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)) \
            or (low is not None and (number <= low if low_open else number < low)) \
            or (high is not None and (number >= high if high_open else number > high)):
        wanted = _range(low, high, low_open, high_open)
        what = "a finite number" if wanted is None else " ".join(w for w in (noun, wanted) if w)
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def check_fraction(name: str, value) -> float:
    """A float in [0, 1]."""
    return check_real(name, value, low=0, high=1, noun="a fraction")


def check_probability(name: str, value) -> float:
    """A float in the open interval (0, 1), e.g. a significance level."""
    return check_real(name, value, low=0, high=1, low_open=True, high_open=True, noun=None)
