"""The MCMC loops: a dual-averaging warm-up and the sampling loop, for any kernel.

A kernel here is `kernel(key, state, potential_fn, step_size) -> (state, info)` where `key` is
the step's `noise.StepKey`, `state` has `position` (chains, ...) and `potential` (chains,), and
`info` has `is_accepted` and `is_nonfinite` (chains,) bool, plus `acceptance_rate` (chains,) for
the warm-up. Step t of every chain uses its key folded with t, so steps are numbered globally:
the warm-up takes steps 0 .. W-1 and sampling continues at `first_step` = W.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from kale_jax.mcmc import noise, step_size as step_size_lib

Array = jax.Array
Kernel = Callable[..., tuple[Any, Any]]
StepSize = Union[Array, Callable[[Array], Array]]


class Counts(NamedTuple):
    """The loop's carry: kernel state; accepted (chains,) float; nonfinite (chains,) int32."""

    state: Any
    num_accepted: Array
    num_nonfinite: Array


class Trace(NamedTuple):
    """Every thin-th step: position (blocks, chains, ...), potential (blocks, chains), and
    acceptance (blocks, chains), the fraction of accepted proposals in each block."""

    position: Array
    potential: Array
    acceptance: Array


def cap_unroll(unroll: Union[int, bool], length: int) -> Union[int, bool]:
    """`unroll` for a scan of `length` steps: True stays True, ints are clipped to [1, length]."""
    if unroll is True:
        return True
    return max(1, min(unroll, length))


def zero_counts(state: Any) -> tuple[Array, Array]:
    """Zero (accepted, nonfinite) counters shaped like state.potential (chains,).

    zeros_like keeps shard_map's device-varying type, which a scan carry must keep.
    """
    return (jnp.zeros_like(state.potential, dtype=state.position.dtype),
            jnp.zeros_like(state.potential, dtype=jnp.int32))


def warmup(kernel: Kernel, state: Any, potential_fn: Callable, chain_keys: Array,
           base_step: Array, num_steps: int, *, target_acceptance: float,
           axis_name: Optional[str] = None, unroll: Union[int, bool] = 1,
           num_nonfinite: Optional[Array] = None) -> tuple[Any, Array, Array]:
    """Steps 0 .. num_steps-1 with the step size adapted by dual averaging.

    One multiplier is shared by all chains and driven by the mean acceptance rate over chains
    (over every device's chains when `axis_name` names the mapped chain axis).

    Args:
      kernel, state, potential_fn: see the module docstring.
      chain_keys: (chains,) typed per-chain keys.
      base_step: (chains,) base step size, scaled by the adapted multiplier.
      num_steps: warm-up steps, int >= 1.
      target_acceptance: in (0, 1).
      axis_name: mapped axis to average the acceptance rate over, or None.
      unroll: steps per scan iteration.
      num_nonfinite: (chains,) int32 count to continue, or None for zeros.

    Returns:
      (state, multiplier: float32 scalar, the final averaged multiplier, num_nonfinite).
    """
    adaptation = step_size_lib.dual_averaging(target_acceptance)
    dtype = state.position.dtype
    if num_nonfinite is None:
        num_nonfinite = zero_counts(state)[1]
    # The adaptation state is reduced like the acceptance signal: per device (varying) unless
    # averaged over `axis_name`.
    zero = jnp.zeros_like(jnp.mean(state.potential), dtype=jnp.float32)
    if axis_name is not None:
        zero = lax.pmean(zero, axis_name)

    def one_step(carry, t):
        state, adapt, nonfinite = carry
        eps = base_step * jnp.exp(adapt.log_factor).astype(dtype)
        state, info = kernel(noise.step_key(chain_keys, t), state, potential_fn, eps)
        rate = jnp.mean(info.acceptance_rate.astype(jnp.float32))
        if axis_name is not None:
            rate = lax.pmean(rate, axis_name)
        adapt = adaptation.update(adapt, rate)
        return (state, adapt, nonfinite + info.is_nonfinite.astype(jnp.int32)), None

    (state, adapt, num_nonfinite), _ = lax.scan(
        one_step, (state, adaptation.init(zero), num_nonfinite),
        jnp.arange(num_steps, dtype=jnp.int32), unroll=cap_unroll(unroll, num_steps))
    return state, adaptation.final(adapt), num_nonfinite


def run(kernel: Kernel, state: Any, potential_fn: Callable, chain_keys: Array,
        step_size: StepSize, num_steps: int, *, first_step: int = 0,
        thin: Optional[int] = None, unroll: Union[int, bool] = 1,
        num_nonfinite: Optional[Array] = None) -> tuple[Counts, Optional[Trace]]:
    """Steps first_step .. first_step + num_steps - 1 of `kernel`, counting acceptances.

    Args:
      kernel, state, potential_fn: see the module docstring.
      chain_keys: (chains,) typed per-chain keys.
      step_size: (chains,) step size, or a function of the global step index (int32 scalar)
        giving it.
      num_steps: int >= 0.
      first_step: global index of the first step (the number of warm-up steps before).
      thin: record the state after every thin-th step, or None for no trace.
      unroll: steps per scan iteration (int >= 1 or True).
      num_nonfinite: (chains,) int32 count to continue (e.g. from the warm-up), or None.

    Returns:
      (Counts(final state, accepted steps, non-finite proposals), Trace of num_steps // thin
      blocks or None). A remainder of num_steps % thin steps runs after the last block.
    """
    step_size_at = step_size if callable(step_size) else (lambda t: step_size)
    accepted, nonfinite = zero_counts(state)
    if num_nonfinite is not None:
        nonfinite = num_nonfinite
    dtype = state.position.dtype

    def one_step(carry: Counts, t) -> tuple[Counts, None]:
        state, info = kernel(noise.step_key(chain_keys, t), carry.state, potential_fn,
                             step_size_at(t))
        return Counts(state,
                      carry.num_accepted + info.is_accepted.astype(dtype),
                      carry.num_nonfinite + info.is_nonfinite.astype(jnp.int32)), None

    def steps(carry: Counts, start, length: int) -> Counts:
        if length == 0:
            return carry
        carry, _ = lax.scan(one_step, carry, start + jnp.arange(length, dtype=jnp.int32),
                            unroll=cap_unroll(unroll, length))
        return carry

    carry = Counts(state, accepted, nonfinite)
    if thin is None:
        return steps(carry, first_step, num_steps), None
    num_blocks = num_steps // thin

    def block(carry: Counts, block_index):
        accepted_before = carry.num_accepted
        carry = steps(carry, first_step + block_index * thin, thin)
        return carry, Trace(carry.state.position, carry.state.potential,
                            (carry.num_accepted - accepted_before) / thin)

    outer_unroll = 1 if unroll is True else max(1, unroll // thin)
    carry, trace = lax.scan(block, carry, jnp.arange(num_blocks, dtype=jnp.int32),
                            unroll=cap_unroll(outer_unroll, num_blocks))
    carry = steps(carry, first_step + num_blocks * thin, num_steps - num_blocks * thin)
    return carry, trace
