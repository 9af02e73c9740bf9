"""Reading optional per-dataset keys from a data config, with defaults and clear errors.

A data config is an ``ml_collections.ConfigDict`` (or any mapping) holding at least ``name``;
keys a dataset does not define are ignored, so one config layout serves every dataset.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def get(data_config: Mapping[str, Any], key: str, default: Any) -> Any:
    """`data_config[key]`, or `default` when the key is absent or None."""
    value = data_config.get(key, None)
    return default if value is None else value


def positive_float(data_config: Mapping[str, Any], key: str, default: float) -> float:
    """`data_config[key]` (default `default`) as a float; ValueError unless finite and > 0."""
    value = get(data_config, key, default)
    try:
        number = float("nan") if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0.0 or number == float("inf"):
        raise ValueError(f"data.{key} must be a finite number > 0, got {value!r}.")
    return number


def choice(data_config: Mapping[str, Any], key: str, default: Any,
           allowed: Sequence[Any]) -> Any:
    """`data_config[key]` (default `default`); ValueError unless it is one of `allowed`."""
    value = get(data_config, key, default)
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"data.{key} must be one of {tuple(allowed)}, got {value!r}.")
    return value
