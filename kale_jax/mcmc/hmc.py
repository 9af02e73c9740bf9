"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps.

Momentum p ~ N(0, I); `num_leapfrog_steps` leapfrog steps of size h; accepted with probability
min(1, exp(H_old - H_new)), H = U + |p|^2 / 2. A rejection keeps the old point and its gradient.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from kale_jax.mcmc import noise, proposals

Array = jax.Array

DEFAULT_NUM_LEAPFROG_STEPS = 10


class HMCState(NamedTuple):
    """position (chains, ...); potential U(position) (chains,); grad U(position) (chains, ...)."""

    position: Array
    potential: Array
    grad: Array


class HMCInfo(NamedTuple):
    """Per chain (chains,): acceptance_rate min(1, exp(H_old - H_new)) (0 if non-finite),
    is_accepted, is_nonfinite (the trajectory's end was not finite and was rejected)."""

    acceptance_rate: Array
    is_accepted: Array
    is_nonfinite: Array


def init(position: Array, potential_fn: proposals.PotentialFn, key=None,
         grad_transform: proposals.GradTransform = None) -> HMCState:
    """State at `position` (chains, ...); `key` is unused."""
    del key
    return HMCState(position, *proposals.potential_and_gradient(position, potential_fn,
                                                             grad_transform))


def build_kernel(num_leapfrog_steps: int = DEFAULT_NUM_LEAPFROG_STEPS,
                 grad_transform: proposals.GradTransform = None) -> Callable:
    """HMC kernel(key, state, potential_fn, step_size (chains,)) -> (HMCState, HMCInfo).

    Args:
      num_leapfrog_steps: int >= 1, leapfrog steps per proposal (one gradient each).
      grad_transform: see `proposals.value_and_grad`.
    """
    if (isinstance(num_leapfrog_steps, bool) or not isinstance(num_leapfrog_steps, int)
            or num_leapfrog_steps < 1):
        raise ValueError(
            f'num_leapfrog_steps: got {num_leapfrog_steps!r}, expected an int >= 1.')

    def kernel(key, state: HMCState, potential_fn, step_size: Array):
        value_and_grad = proposals.value_and_grad(potential_fn, grad_transform)
        h = proposals.per_chain(step_size, state.position)
        p0, uniform = noise.normal_and_uniform(key, state.position)

        def leapfrog(carry, _):
            z, p, _, g = carry
            p = p - 0.5 * h * g
            z = z + h * p
            u, g = value_and_grad(z)
            p = p - 0.5 * h * g
            return (z, p, u, g), None

        (z_new, p_new, u_new, g_new), _ = lax.scan(
            leapfrog, (state.position, p0, state.potential, state.grad), None,
            length=num_leapfrog_steps)
        h_old = state.potential + 0.5 * proposals.sum_event(jnp.square(p0))
        h_new = u_new + 0.5 * proposals.sum_event(jnp.square(p_new))
        finite = jnp.isfinite(u_new) & proposals.all_finite(g_new) & proposals.all_finite(p_new)
        accepted, prob = proposals.mh_accept(uniform, h_old - h_new, finite,
                                             state.position.dtype)
        new_state = proposals.select(accepted, HMCState(z_new, u_new, g_new), state)
        return new_state, HMCInfo(prob, accepted, ~finite)

    return kernel
