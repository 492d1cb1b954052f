"""The package's one argument-check policy (mlguard._checks)."""

import numpy as np
import pytest
import torch

from mlguard._checks import (ArgumentTypeError, check_fraction, check_int, check_probability,
                             check_real)


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), torch.tensor(3)])
def test_every_integer_type_is_accepted_as_an_int(value):
    got = check_int("n", value, low=1)
    assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, "3", None, torch.tensor(3.0)])
def test_bools_floats_and_others_are_a_type_error_that_is_also_a_value_error(value):
    with pytest.raises(TypeError, match=f"n must be an int, got {type(value).__name__}") as e:
        check_int("n", value, low=1)
    assert isinstance(e.value, ArgumentTypeError) and isinstance(e.value, ValueError)


def test_out_of_range_is_a_value_error_naming_the_bounds():
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 16\], got 17") as e:
        check_int("n", 17, low=1, high=16)
    assert not isinstance(e.value, TypeError)
    with pytest.raises(ValueError, match="n must be an int >= 2, got 1"):
        check_int("n", np.int32(1), low=2)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5)])
def test_reals(value):
    assert check_fraction("f", value) == float(value)


@pytest.mark.parametrize("value, error", [(True, TypeError), ("0.5", TypeError),
                                          (float("nan"), ValueError), (1.5, ValueError),
                                          (float("inf"), ValueError)])
def test_bad_reals(value, error):
    with pytest.raises(error, match=r"f must be (a float|a fraction in \[0, 1\]), got"):
        check_fraction("f", value)


def test_open_bounds():
    with pytest.raises(ValueError, match=r"alpha must be in the open interval \(0, 1\), got 1"):
        check_probability("alpha", 1)
    with pytest.raises(ValueError, match="lr must be a number > 0, got 0"):
        check_real("lr", 0, low=0, low_open=True)
    assert check_real("x", -5.0) == -5.0
