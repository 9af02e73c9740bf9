"""Tests of kale_jax.checks: each check returns the converted value or raises one ConfigError line
naming the key, the bad value and what is allowed."""
import math

import numpy as np
import pytest

from kale_jax import checks
from kale_jax.errors import ConfigError


def _message(check, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        check(*args, **kwargs)
    assert isinstance(error.value, ValueError)  # callers may catch ValueError
    message = str(error.value)
    assert "\n" not in message
    return message


def test_check_int():
    assert checks.check_int(3, "k") == 3 and type(checks.check_int(np.int64(3), "k")) is int
    assert checks.check_int(0, "k", minimum=0) == 0
    assert checks.check_int(None, "k", allow_none=True) is None
    assert checks.check_int(-1, "k") == -1  # no bound given: any integer
    for bad in (True, 1.0, "1", None, 0):
        message = _message(checks.check_int, bad, "config.train.batch_size", minimum=1)
        assert message.startswith(f"config.train.batch_size={bad!r} must be an integer >= 1")
    assert _message(checks.check_int, 7, "k", minimum=1, maximum=5) == (
        "k=7 must be an integer in [1, 5]")
    assert _message(checks.check_int, -2, "k", minimum=-1, allow_none=True, fix="-1: off") == (
        "k=-2 must be None or an integer >= -1; -1: off")


def test_check_positive():
    assert checks.check_positive(2, "k") == 2.0 and type(checks.check_positive(2, "k")) is float
    assert checks.check_positive(0.0, "k", allow_zero=True) == 0.0
    assert checks.check_positive(None, "k", allow_none=True) is None
    for bad in (0.0, -1.0, math.nan, math.inf, True, "big", None):
        message = _message(checks.check_positive, bad, "config.data.std")
        assert message == f"config.data.std={bad!r} must be a finite number > 0"
    assert _message(checks.check_positive, -0.5, "k", allow_zero=True) == (
        "k=-0.5 must be a finite number >= 0")


def test_check_probability():
    assert checks.check_probability(1.0, "k") == 1.0 and checks.check_probability(0, "k") == 0.0
    assert _message(checks.check_probability, 1.0, "config.optim.energy.b1",
                    include_one=False) == "config.optim.energy.b1=1.0 must be in [0, 1)"
    assert _message(checks.check_probability, 0.0, "k", include_zero=False,
                    include_one=False) == "k=0.0 must be in (0, 1)"
    for bad in (-0.1, 1.5, math.nan, True, "0.5"):
        assert "must be in [0, 1]" in _message(checks.check_probability, bad, "k")


def test_check_choice_bool_and_pair():
    assert checks.check_choice("mala", "k", ("ula", "mala")) == "mala"
    assert _message(checks.check_choice, "nuts", "config.sampler.kernel", ("ula", "mala"),
                    fix="see kale_jax.hmc") == (
        "config.sampler.kernel='nuts' is not one of ('ula', 'mala'); see kale_jax.hmc")
    # True == 1 in Python, but a bool is not an image size; an unhashable value is refused.
    assert "is not one of (1, 2)" in _message(checks.check_choice, True, "k", (1, 2))
    assert "is not one of" in _message(checks.check_choice, [1], "k", {"a": 1})
    assert checks.check_bool(False, "k") is False
    assert _message(checks.check_bool, 1, "config.train.soft_clip") == (
        "config.train.soft_clip=1 must be True or False")
    assert checks.check_pair([-1, 2.5], "k") == (-1.0, 2.5)
    for bad in ((1.0, 1.0), (2.0, 1.0), (0.0, math.inf), (0.0,), "ab", (True, 2.0)):
        assert "must be a pair (low, high)" in _message(checks.check_pair, bad, "k")
