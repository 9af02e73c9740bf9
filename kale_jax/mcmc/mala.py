"""Metropolis-adjusted Langevin (MALA): the ULA proposal plus a Metropolis-Hastings test.

Proposal z' = z - s grad U(z) + sqrt(2 s) xi, with density
log q(a | b) = -|a - b + s grad U(b)|^2 / (4 s) in the acceptance ratio.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from kale_jax.mcmc import noise, proposals

Array = jax.Array


class MALAState(NamedTuple):
    """position (chains, ...); potential U(position) (chains,); grad U(position) (chains, ...)."""

    position: Array
    potential: Array
    grad: Array


class MALAInfo(NamedTuple):
    """Per chain (chains,): acceptance_rate min(1, exp(log alpha)) (0 if non-finite),
    is_accepted, is_nonfinite (the proposal was not finite and was rejected)."""

    acceptance_rate: Array
    is_accepted: Array
    is_nonfinite: Array


def init(position: Array, potential_fn: proposals.PotentialFn, key=None,
         grad_transform: proposals.GradTransform = None) -> MALAState:
    """State at `position` (chains, ...); `key` is unused."""
    del key
    return MALAState(position, *proposals.potential_and_gradient(position, potential_fn,
                                                             grad_transform))


def build_kernel(grad_transform: proposals.GradTransform = None) -> Callable:
    """MALA kernel(key, state, potential_fn, step_size (chains,)) -> (MALAState, MALAInfo).

    Args:
      grad_transform: see `proposals.value_and_grad`.
    """

    def kernel(key, state: MALAState, potential_fn, step_size: Array):
        z, g = state.position, state.grad
        normal, uniform = noise.normal_and_uniform(key, z)
        z_new = proposals.langevin_move(z, g, step_size, normal)
        u_new, g_new = proposals.value_and_grad(potential_fn, grad_transform)(z_new)
        log_ratio = (state.potential - u_new
                     + proposals.langevin_log_density(z, z_new, g_new, step_size)
                     - proposals.langevin_log_density(z_new, z, g, step_size))
        finite = jnp.isfinite(u_new) & proposals.all_finite(g_new)
        accepted, prob = proposals.mh_accept(uniform, log_ratio, finite, z.dtype)
        new_state = proposals.select(accepted, MALAState(z_new, u_new, g_new), state)
        return new_state, MALAInfo(prob, accepted, ~finite)

    return kernel
