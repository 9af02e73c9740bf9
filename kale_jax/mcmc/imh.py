"""Independent Metropolis-Hastings with proposals from the prior z' ~ N(0, I); no gradients.

The proposal density is part of the ratio: log alpha = [U(z) - |z|^2/2] - [U(z') - |z'|^2/2].
Correct for any U; efficient only when U = |z|^2 / 2 + (something modest), as for the GEBM
latent posterior U = |z|^2 / 2 + beta E(B(z)). The step size is ignored.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from kale_jax.mcmc import noise, proposals

Array = jax.Array


class IMHState(NamedTuple):
    """position (chains, ...); potential U(position) (chains,)."""

    position: Array
    potential: Array


class IMHInfo(NamedTuple):
    """Per chain (chains,): acceptance_rate min(1, alpha) (0 if non-finite), is_accepted,
    is_nonfinite (the proposal's potential was not finite and it was rejected)."""

    acceptance_rate: Array
    is_accepted: Array
    is_nonfinite: Array


def init(position: Array, potential_fn: proposals.PotentialFn, key=None) -> IMHState:
    """State at `position` (chains, ...); `key` is unused."""
    del key
    u = potential_fn(position)
    proposals.check_potential_shape(u, position)
    return IMHState(position, u)


def build_kernel() -> Callable:
    """IMH kernel(key, state, potential_fn, step_size) -> (IMHState, IMHInfo); step_size unused."""

    def kernel(key, state: IMHState, potential_fn, step_size=None):
        del step_size
        z = state.position
        z_new, uniform = noise.normal_and_uniform(key, z)
        u_new = potential_fn(z_new)
        # log w(z) = -(U(z) - |z|^2 / 2): target over proposal density, up to constants.
        log_w_old = -(state.potential - 0.5 * proposals.sum_event(jnp.square(z)))
        log_w_new = -(u_new - 0.5 * proposals.sum_event(jnp.square(z_new)))
        finite = jnp.isfinite(u_new)
        accepted, prob = proposals.mh_accept(uniform, log_w_new - log_w_old, finite, z.dtype)
        new_state = proposals.select(accepted, IMHState(z_new, u_new), state)
        return new_state, IMHInfo(prob, accepted, ~finite)

    return kernel
