"""Unadjusted (overdamped) Langevin: z' = z - s grad U(z) + sqrt(2 s) xi, xi ~ N(0, I).

Biased for s > 0 (no Metropolis test). A non-finite proposal is rejected and counted.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from kale_jax.mcmc import noise, proposals

Array = jax.Array


class ULAState(NamedTuple):
    """position (chains, ...); potential U(position) (chains,); grad U(position) (chains, ...)."""

    position: Array
    potential: Array
    grad: Array


class ULAInfo(NamedTuple):
    """is_accepted (chains,): the move was taken (False only if non-finite); is_nonfinite."""

    is_accepted: Array
    is_nonfinite: Array


def init(position: Array, potential_fn: proposals.PotentialFn, key=None,
         grad_transform: proposals.GradTransform = None) -> ULAState:
    """State at `position` (chains, ...); `key` is unused."""
    del key
    return ULAState(position, *proposals.potential_and_gradient(position, potential_fn,
                                                             grad_transform))


def build_kernel(grad_transform: proposals.GradTransform = None) -> Callable:
    """ULA kernel(key, state, potential_fn, step_size (chains,)) -> (ULAState, ULAInfo).

    Args:
      grad_transform: see `proposals.value_and_grad`.
    """

    def kernel(key, state: ULAState, potential_fn, step_size: Array):
        z = proposals.langevin_move(state.position, state.grad, step_size,
                                    noise.normal(key, state.position))
        u, g = proposals.value_and_grad(potential_fn, grad_transform)(z)
        finite = jnp.isfinite(u) & proposals.all_finite(g)
        new_state = proposals.select(finite, ULAState(z, u, g), state)
        return new_state, ULAInfo(finite, ~finite)

    return kernel
