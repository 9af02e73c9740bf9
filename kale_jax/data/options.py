"""Reading optional per-dataset keys from a data config, with defaults and clear errors.

A data config is an ``ml_collections.ConfigDict`` (or any mapping) holding at least ``name``;
keys a dataset does not define are ignored, so one config layout serves every dataset.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from kale_jax import checks


def get(data_config: Mapping[str, Any], key: str, default: Any) -> Any:
    """`data_config[key]`, or `default` when the key is absent or None."""
    value = data_config.get(key, None)
    return default if value is None else value


def positive_float(data_config: Mapping[str, Any], key: str, default: float) -> float:
    """`data_config[key]` (default `default`) as a float; ConfigError unless finite and > 0."""
    return checks.check_positive(get(data_config, key, default), f"config.data.{key}")


def choice(data_config: Mapping[str, Any], key: str, default: Any,
           allowed: Sequence[Any]) -> Any:
    """`data_config[key]` (default `default`); ConfigError unless it is one of `allowed`."""
    return checks.check_choice(get(data_config, key, default), f"config.data.{key}", allowed)


def integer(data_config: Mapping[str, Any], key: str, default: int, minimum: int = 1,
            maximum: Any = None, fix: Any = None) -> int:
    """`data_config[key]` (default `default`) as an int; ConfigError unless in [minimum,
    maximum] (None: unbounded above)."""
    return checks.check_int(get(data_config, key, default), f"config.data.{key}",
                            minimum=minimum, maximum=maximum, fix=fix)
