"""Step-size control: dual averaging (Hoffman & Gelman 2014) and the authors' decay schedule.

Dual averaging adapts a log multiplier of a base step size toward a target acceptance rate; it
composes with any kernel whose info has an `acceptance_rate` (see kale_jax.mcmc.run.warmup).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
Schedule = Callable[[Array], Array]

# Hoffman & Gelman (2014), section 3.2.1.
GAMMA = 0.05
T0 = 10.0
KAPPA = 0.75
# The log multiplier is clipped to +-MAX_LOG_FACTOR so a long run of acceptances cannot overflow
# the step size to inf (which would only produce rejected NaN proposals).
MAX_LOG_FACTOR = 30.0


class DualAveragingState(NamedTuple):
    """Dual averaging of a log step-size multiplier (Hoffman & Gelman 2014, algorithm 5).

    log_factor: current log multiplier; log_factor_avg: its weighted average (the final value);
    error_avg: running mean of (target - acceptance) ("H bar"); count: number of updates.
    All float32 scalars.
    """

    log_factor: Array
    log_factor_avg: Array
    error_avg: Array
    count: Array


class DualAveraging(NamedTuple):
    """init(zero=None) -> state; update(state, acceptance_rate) -> state; final(state) -> factor.

    The multiplier in use during adaptation is exp(state.log_factor).
    """

    init: Callable[..., DualAveragingState]
    update: Callable[[DualAveragingState, Array], DualAveragingState]
    final: Callable[[DualAveragingState], Array]


def dual_averaging(target: float, gamma: float = GAMMA, t0: float = T0,
                   kappa: float = KAPPA) -> DualAveraging:
    """Dual averaging of a step-size multiplier toward a target acceptance rate.

    The shrinkage point is mu = log(10) relative to the base step size (H&G's log(10 eps0)).

    Args:
      target: acceptance rate to reach, in (0, 1).
      gamma, t0, kappa: H&G's parameters (defaults from their section 3.2.1).

    Returns:
      DualAveraging(init, update, final): init(zero) takes an optional float32 scalar 0 (to carry
      shard_map's device-varying type); update takes a scalar acceptance rate (e.g. the mean over
      chains); final gives the multiplier exp(averaged log multiplier), float32 scalar.
    """

    def init(zero: Optional[Array] = None) -> DualAveragingState:
        zero = jnp.zeros((), jnp.float32) if zero is None else zero
        return DualAveragingState(zero, zero, zero, zero)

    def update(state: DualAveragingState, acceptance_rate: Array) -> DualAveragingState:
        count = state.count + 1.0
        eta = 1.0 / (count + t0)
        error_avg = (1.0 - eta) * state.error_avg + eta * (target - acceptance_rate)
        log_factor = math.log(10.0) - jnp.sqrt(count) / gamma * error_avg
        log_factor = jnp.clip(log_factor, -MAX_LOG_FACTOR, MAX_LOG_FACTOR)
        weight = count ** (-kappa)
        log_factor_avg = weight * log_factor + (1.0 - weight) * state.log_factor_avg
        return DualAveragingState(log_factor, log_factor_avg, error_avg, count)

    def final(state: DualAveragingState) -> Array:
        return jnp.exp(state.log_factor_avg)

    return DualAveraging(init, update, final)


def decay_schedule(decay_factor: float, decay_every: int) -> Schedule:
    """The authors' recipe: step multiplier decay_factor ** (step // decay_every).

    Args:
      decay_factor: multiplier > 0 applied every `decay_every` steps.
      decay_every: int >= 1.

    Returns:
      schedule(step: int scalar) -> float32 scalar multiplier.
    """

    def schedule(step):
        return jnp.asarray(decay_factor, jnp.float32) ** (step // decay_every)

    return schedule
