"""The GEBM's latent posterior potential, the function latent MCMC samples from.

A GEBM Q(dx) ∝ exp(-E(x)) G(dx) with G the pushforward of N(0, I) by the base B is sampled by
drawing latents from nu(z) ∝ N(z; 0, I) exp(-beta E(B(z))) and returning B(z). Its potential
(negative log density up to a constant) is

    U(z) = 0.5 |z|^2 + beta * E(B(z)).

beta = 1 is the model itself; beta > 1 a colder posterior.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax import kale

Array = jax.Array
Variables = Mapping[str, Any]


def energy_fn(energy: nn.Module, energy_variables: Variables,
              energy_floor: float | None = None) -> Callable[[Array], Array]:
    """E(x) in inference mode (no state updated): (n, ...) -> (n,), optionally soft-floored."""

    def apply(x: Array) -> Array:
        e = energy.apply(energy_variables, x, train=False)
        return e if energy_floor is None else kale.soft_floor(e, energy_floor)

    return apply


def generator_fn(generator: nn.Module, generator_variables: Variables) -> Callable[[Array], Array]:
    """B(z) in inference mode (BatchNorm running averages, nothing updated): (n, d) -> (n, ...).

    Training applies a BatchNorm generator in train mode (batch statistics of the global batch,
    kale_jax.train.steps); here, in evaluation and sampling, it runs in inference mode on the
    running averages, so that chains do not interact. The two agree only as far as the running
    averages match the batch statistics (momentum common.BATCH_NORM_MOMENTUM); a generator
    without BatchNorm is the same in both modes.
    """
    return lambda z: generator.apply(generator_variables, z, train=False)


def potential(generator: nn.Module, energy: nn.Module, generator_variables: Variables,
              energy_variables: Variables, beta: float | Array = 1.0,
              energy_floor: float | None = None) -> Callable[[Array], Array]:
    """Builds U(z) = 0.5 |z|^2 + beta * E(B(z)) per chain.

    Both networks run in inference mode, so chains do not interact (the gradient of the sum of
    potentials is each chain's own gradient) and no state changes during MCMC. Call this inside
    the jitted function that samples, with the variables as its arguments, so that they are
    traced rather than baked into the program as constants.

    Args:
      generator, energy: the Linen modules of the base and the energy.
      generator_variables, energy_variables: their variables ({'params': ..., 'batch_stats': ...}).
      beta: inverse temperature on the energy (scalar).
      energy_floor: if not None, the energy is soft-floored at this value (kale.soft_floor),
        as it was during training.
    Returns:
      potential_fn mapping latents (chains, latent_dim) to potentials (chains,).
    """
    base = generator_fn(generator, generator_variables)
    e = energy_fn(energy, energy_variables, energy_floor)

    def potential_fn(z: Array) -> Array:
        prior = 0.5 * jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1)
        return prior + beta * e(base(z))

    return potential_fn
