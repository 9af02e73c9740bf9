"""Kinetic (underdamped) Langevin, unadjusted, BAOAB splitting, one gradient per step.

With friction gamma, step h and xi ~ N(0, I):
    B: v <- v - (h/2) grad U(z)      (cached gradient of the current point)
    A: z <- z + (h/2) v
    O: v <- exp(-gamma h) v + sqrt(1 - exp(-2 gamma h)) xi
    A: z <- z + (h/2) v
    B: v <- v - (h/2) grad U(z)      (new gradient, cached for the next step)
For a Gaussian target BAOAB's stationary position marginal is exact for any stable h
(Leimkuhler & Matthews 2013), and its velocity variance is 1 - h^2 w^2 / 4 for curvature w^2.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from kale_jax.mcmc import noise, proposals

Array = jax.Array

DEFAULT_FRICTION = 1.0


class KLAState(NamedTuple):
    """position, grad, velocity (chains, ...); potential U(position) (chains,)."""

    position: Array
    potential: Array
    grad: Array
    velocity: Array


class KLAInfo(NamedTuple):
    """is_accepted (chains,): the move was taken (False only if non-finite); is_nonfinite."""

    is_accepted: Array
    is_nonfinite: Array


def init(position: Array, potential_fn: proposals.PotentialFn, key,
         grad_transform: proposals.GradTransform = None) -> KLAState:
    """State at `position` (chains, ...) with velocity ~ N(0, I) drawn from `key`."""
    u, g = proposals.potential_and_gradient(position, potential_fn, grad_transform)
    return KLAState(position, u, g, noise.normal(key, position))


def build_kernel(friction: Union[float, Array] = DEFAULT_FRICTION,
                 grad_transform: proposals.GradTransform = None) -> Callable:
    """KLA kernel(key, state, potential_fn, step_size (chains,)) -> (KLAState, KLAInfo).

    Args:
      friction: gamma > 0, in units of 1 / (time of a unit step size); may be traced.
      grad_transform: see `proposals.value_and_grad`.
    """
    if (isinstance(friction, (int, float)) and not isinstance(friction, bool)
            and not float(friction) > 0.0):
        raise ValueError(f'friction: got {friction!r}, expected a number > 0.')

    def kernel(key, state: KLAState, potential_fn, step_size: Array):
        z, g, v = state.position, state.grad, state.velocity
        h = proposals.per_chain(step_size, z)
        decay = jnp.exp(-friction * h)
        v = v - 0.5 * h * g                                                  # B
        z = z + 0.5 * h * v                                                  # A
        v = decay * v + jnp.sqrt(1.0 - decay**2) * noise.normal(key, z)      # O
        z = z + 0.5 * h * v                                                  # A
        u_new, g_new = proposals.value_and_grad(potential_fn, grad_transform)(z)
        v = v - 0.5 * h * g_new                                              # B
        finite = jnp.isfinite(u_new) & proposals.all_finite(g_new) & proposals.all_finite(v)
        new_state = proposals.select(finite, KLAState(z, u_new, g_new, v), state)
        return new_state, KLAInfo(finite, ~finite)

    return kernel
