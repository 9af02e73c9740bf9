"""Checks a training config before anything is built or compiled.

Every error is a ConfigError (a ValueError) naming the config key, the value and what is allowed.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Optional

import ml_collections

from kale_jax import hmc, kale
from kale_jax.errors import ConfigError
from kale_jax.train.parallel import PARALLEL_KINDS

def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config.{key} is missing")
        node = node[part]
    return node


def _choice(config, key: str, allowed: Iterable[str]) -> None:
    value = _get(config, key)
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r} is not one of {allowed}")


def _positive_int(config, key: str, minimum: int = 1) -> None:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"config.{key}={value!r} must be an integer >= {minimum}")


def _positive_float(config, key: str, allow_zero: bool = False) -> None:
    value = _get(config, key)
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and (value >= 0 if allow_zero else value > 0) and value != float("inf"))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config.{key}={value!r} must be a finite number {bound}")


def _in_open_unit(config, key: str) -> None:
    value = _get(config, key)
    if not (isinstance(value, numbers.Real) and 0.0 <= value < 1.0):
        raise ConfigError(f"config.{key}={value!r} must be in [0, 1)")


BASE_OBJECTIVES = ("kale", "mle")


def _validate_base_objective(config) -> None:
    """config.model.base_objective: 'kale' (default when absent) or 'mle' (flow bases only)."""
    from kale_jax import networks  # pylint: disable=g-import-not-at-top

    objective = config.model.get("base_objective", "kale")
    if objective not in BASE_OBJECTIVES:
        raise ConfigError(f"config.model.base_objective={objective!r} is not one of "
                          f"{BASE_OBJECTIVES}")
    if objective == "mle" and config.model.generator not in networks.FLOW_NAMES:
        raise ConfigError(f"config.model.base_objective='mle' needs a flow generator "
                          f"(config.model.generator in {networks.FLOW_NAMES}), got "
                          f"{config.model.generator!r}")
    if objective == "mle" and config.train.criterion != "kale":
        raise ConfigError(f"config.model.base_objective='mle' trains the energy with KALE; set "
                          f"config.train.criterion='kale' (got {config.train.criterion!r})")
    if "nll_base_samples" in config.eval:
        _positive_int(config, "eval.nll_base_samples", minimum=2)


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> None:
    """Raises ValueError on the first bad setting of a training config.

    Args:
      config: the full training config (layout in COMMON.md / configs/default.py).
      num_devices: the device count the run will use; the global batch must divide by it.
    """
    from kale_jax import data, networks  # pylint: disable=g-import-not-at-top

    _choice(config, "parallel", PARALLEL_KINDS)
    _choice(config, "data.name", data.DATASETS)
    _choice(config, "model.generator", networks.GENERATOR_NAMES)
    _choice(config, "model.energy", networks.ENERGY_NAMES)
    if not (_get(config, "model.latent_dim") is None
            and config.model.generator in networks.FLOW_NAMES):  # None: a flow's data dimension
        _positive_int(config, "model.latent_dim")
    floor = _get(config, "model.energy_floor")
    if floor is not None and not isinstance(floor, numbers.Real):
        raise ConfigError(f"config.model.energy_floor={floor!r} must be None or a number")
    for key in ("model.generator_kwargs", "model.energy_kwargs"):
        if not hasattr(_get(config, key), "items"):
            raise ConfigError(f"config.{key}={_get(config, key)!r} must be a dict")

    _validate_base_objective(config)

    _choice(config, "train.criterion", kale.CRITERIA)
    _choice(config, "train.penalty", kale.PENALTIES)
    _positive_float(config, "train.penalty_weight", allow_zero=True)
    for key in ("num_steps", "batch_size", "n_critic", "n_critic_warmup", "warmup_every",
                "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "a_init_batches"):
        _positive_int(config, f"train.{key}")
    if num_devices is not None and config.train.batch_size % num_devices:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not divide by "
                         f"the {num_devices} devices; use a multiple of {num_devices}")

    for name in ("energy", "base"):
        _positive_float(config, f"optim.{name}.learning_rate")
        _in_open_unit(config, f"optim.{name}.b1")
        _in_open_unit(config, f"optim.{name}.b2")
        _positive_float(config, f"optim.{name}.decay_rate")
        _positive_int(config, f"optim.{name}.decay_steps")

    _choice(config, "sampler.kernel", hmc.KERNELS)
    _positive_int(config, "sampler.num_steps", minimum=0)
    if config.sampler.kernel != "imh":
        _positive_float(config, "sampler.step_size")
    _positive_float(config, "sampler.beta")
    _positive_int(config, "sampler.num_adaptation_steps", minimum=0)
    if config.sampler.num_adaptation_steps and config.sampler.kernel not in hmc.ADAPTIVE_KERNELS:
        raise ConfigError(f"config.sampler.num_adaptation_steps={config.sampler.num_adaptation_steps}"
                         f" needs config.sampler.kernel in {hmc.ADAPTIVE_KERNELS}, got "
                         f"{config.sampler.kernel!r}; set it to 0")

    _positive_int(config, "eval.num_samples")
    _positive_int(config, "eval.num_heldout")
