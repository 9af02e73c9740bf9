"""Checks of user-given values: one line each, naming the key, the bad value and what is allowed.

    steps = check_int(config.sampler.num_steps, "config.sampler.num_steps", minimum=0)
    kernel = check_choice(config.sampler.kernel, "config.sampler.kernel", mcmc.names())

Every check returns the value (converted: int, float) and raises kale_jax.errors.ConfigError (a
ValueError) with the message "<key>=<value> must be ...". The caller passes the full key as the
user wrote it (e.g. "config.data.std", or "hidden" inside a network's constructor); nothing
relabels these messages later. Booleans are never accepted as numbers.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

from kale_jax.errors import ConfigError


def _fail(key: str, value: Any, requirement: str, fix: Optional[str]) -> ConfigError:
    return ConfigError(f"{key}={value!r} {requirement}" + (f"; {fix}" if fix else ""))


def _real(value: Any) -> Optional[float]:
    """`value` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_int(value: Any, key: str, *, minimum: Optional[int] = None,
              maximum: Optional[int] = None, allow_none: bool = False,
              fix: Optional[str] = None) -> Optional[int]:
    """`value` as an int; ConfigError unless it is an integer in [minimum, maximum].

    Args:
      value: the value to check (a bool is refused).
      key: the name shown in the message, e.g. "config.train.batch_size".
      minimum, maximum: inclusive bounds (None: unbounded).
      allow_none: None passes (and is returned).
      fix: what to do, appended to the message.
    Returns:
      int(value), or None when allowed.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            bound = f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            bound = f" >= {minimum}"
        elif maximum is not None:
            bound = f" <= {maximum}"
        else:
            bound = ""
        none = "None or " if allow_none else ""
        raise _fail(key, value, f"must be {none}an integer{bound}", fix)
    return int(value)


def check_positive(value: Any, key: str, *, allow_zero: bool = False, allow_none: bool = False,
                   fix: Optional[str] = None) -> Optional[float]:
    """`value` as a float; ConfigError unless it is a finite number > 0 (>= 0 with allow_zero).

    Args:
      value: the value to check (a bool or a string is refused).
      key: the name shown in the message.
      allow_zero: accept 0.
      allow_none: None passes (and is returned).
      fix: what to do, appended to the message.
    Returns:
      float(value), or None when allowed.
    """
    if value is None and allow_none:
        return None
    number = _real(value)
    ok = number is not None and math.isfinite(number) and (
        number >= 0.0 if allow_zero else number > 0.0)
    if not ok:
        none = "None or " if allow_none else ""
        raise _fail(key, value, f"must be {none}a finite number {'>= 0' if allow_zero else '> 0'}",
                    fix)
    return number


def check_probability(value: Any, key: str, *, include_one: bool = True,
                      include_zero: bool = True, fix: Optional[str] = None) -> float:
    """`value` as a float; ConfigError unless it lies in [0, 1] (ends as chosen).

    Args:
      value: the value to check.
      key: the name shown in the message.
      include_one, include_zero: whether 1 and 0 are allowed, e.g. Adam's b1 is in [0, 1).
      fix: what to do, appended to the message.
    Returns:
      float(value).
    """
    number = _real(value)
    ok = number is not None and (number >= 0.0 if include_zero else number > 0.0) and (
        number <= 1.0 if include_one else number < 1.0)
    if not ok:
        interval = ("[" if include_zero else "(") + "0, 1" + ("]" if include_one else ")")
        raise _fail(key, value, f"must be in {interval}", fix)
    return number


def check_choice(value: Any, key: str, allowed: Sequence[Any],
                 fix: Optional[str] = None) -> Any:
    """`value`; ConfigError unless it is one of `allowed` (a bool never matches 0 or 1).

    Args:
      value: the value to check.
      key: the name shown in the message.
      allowed: the allowed values, listed in the message.
      fix: what to do, appended to the message.
    """
    allowed = tuple(allowed)
    if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
        ok = False
    else:
        try:
            ok = value in allowed
        except TypeError:  # an unhashable value compared with a dict's keys
            ok = False
    if not ok:
        raise _fail(key, value, f"is not one of {allowed}", fix)
    return value


def check_bool(value: Any, key: str, fix: Optional[str] = None) -> bool:
    """`value`; ConfigError unless it is True or False."""
    if not isinstance(value, bool):
        raise _fail(key, value, "must be True or False", fix)
    return value


def check_pair(value: Any, key: str, fix: Optional[str] = None) -> tuple:
    """(low, high) as floats; ConfigError unless a pair of finite numbers with low < high."""
    numbers_ = [_real(v) for v in value] if isinstance(value, (tuple, list)) else []
    ok = (len(numbers_) == 2 and all(v is not None and math.isfinite(v) for v in numbers_)
          and numbers_[0] < numbers_[1])
    if not ok:
        raise _fail(key, value, "must be a pair (low, high) of finite numbers with low < high",
                    fix)
    return tuple(numbers_)
