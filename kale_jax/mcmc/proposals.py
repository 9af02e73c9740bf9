"""Pieces the kernels share: batched value-and-gradient, the Langevin move, the NaN-safe MH test.

Chains are batched on the leading axis of every array. A proposal whose potential, gradient (or,
for HMC, momentum) is not finite is rejected: the chain keeps its last finite state together
with that state's own cached potential and gradient, and the step is counted as non-finite.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
PotentialFn = Callable[[Array], Array]
GradTransform = Optional[Callable[[Callable], Callable]]


def sum_event(x: Array) -> Array:
    """Sum over every axis but the leading chain axis: (chains, ...) -> (chains,)."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def per_chain(values: Array, like: Array) -> Array:
    """Reshape (chains,) to (chains, 1, ..., 1) so it broadcasts against `like` (chains, ...)."""
    return jnp.reshape(values, values.shape + (1,) * (like.ndim - 1))


def all_finite(x: Array) -> Array:
    """(chains, ...) -> (chains,) bool: every entry of the chain's slice is finite."""
    return jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))


def select(accept: Array, new: Any, old: Any) -> Any:
    """Per-chain choice between pytrees of (chains, ...) arrays: `new` where accept (chains,)."""
    return jax.tree.map(lambda n, o: jnp.where(per_chain(accept, n), n, o), new, old)


def check_potential_shape(u: Array, position: Array) -> None:
    """Raise ValueError unless `u` has one potential per chain of `position`."""
    if u.shape != position.shape[:1]:
        raise ValueError(
            f'potential_fn: must return one potential per chain, shape {position.shape[:1]}, '
            f'for positions of shape {position.shape}; got shape {u.shape}.')


def value_and_grad(potential_fn: PotentialFn,
                   grad_transform: GradTransform = None) -> Callable[[Array], tuple[Array, Array]]:
    """z (chains, ...) -> (U (chains,), grad U (chains, ...)) in one forward/backward pass.

    Differentiating the sum over chains gives every chain's gradient because chains do not
    interact: `potential_fn` must not couple chains (no batch statistics).

    Args:
      potential_fn: (chains, ...) -> (chains,).
      grad_transform: optional function transformation applied to the value-and-gradient
        function (same function, another form, e.g. kale_jax.xla_cpu.with_hwio_convolutions).

    Returns:
      The value-and-gradient function.
    """

    def total(z):
        u = potential_fn(z)
        return jnp.sum(u), u

    grad_fn = jax.value_and_grad(total, has_aux=True)
    if grad_transform is not None:
        grad_fn = grad_transform(grad_fn)

    def fn(z):
        (_, u), g = grad_fn(z)
        return u, g

    return fn


def potential_and_gradient(position: Array, potential_fn: PotentialFn,
                           grad_transform: GradTransform = None) -> Tuple[Array, Array]:
    """(U (chains,), grad U (chains, ...)) at `position`, with the potential's shape checked: the
    start of every gradient kernel's state."""
    u, g = value_and_grad(potential_fn, grad_transform)(position)
    check_potential_shape(u, position)
    return u, g


def langevin_move(position: Array, grad: Array, step_size: Array, normal: Array) -> Array:
    """Overdamped Langevin move z - s grad U(z) + sqrt(2 s) xi.

    Args:
      position, grad, normal: (chains, ...); normal standard normal.
      step_size: (chains,) time step s (units of position^2 per unit of potential).

    Returns:
      (chains, ...) proposal.
    """
    s = per_chain(step_size, position)
    return position - s * grad + jnp.sqrt(2.0 * s) * normal


def langevin_log_density(to: Array, start: Array, grad_start: Array, step_size: Array) -> Array:
    """log q(to | start) = -|to - start + s grad U(start)|^2 / (4 s), up to a constant: (chains,).

    Args:
      to, start, grad_start: (chains, ...).
      step_size: (chains,) time step s.
    """
    s = per_chain(step_size, start)
    return -sum_event(jnp.square(to - start + s * grad_start)) / (4.0 * step_size)


def mh_accept(uniform: Array, log_ratio: Array, finite: Array,
              dtype: Any) -> tuple[Array, Array]:
    """Metropolis-Hastings decision per chain, rejecting non-finite proposals.

    Args:
      uniform: (chains,) in (0, 1).
      log_ratio: (chains,) log acceptance ratio; NaN compares False (rejected).
      finite: (chains,) bool, the proposal is finite; False forces a rejection.
      dtype: float dtype of the returned probability.

    Returns:
      accepted (chains,) bool, and the acceptance probability min(1, exp(log_ratio)) (chains,),
      0 for non-finite proposals.
    """
    log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
    accepted = finite & (jnp.log(uniform) < log_ratio)
    prob = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
    return accepted, prob.astype(dtype)
