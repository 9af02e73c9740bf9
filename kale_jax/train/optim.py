"""Optimisers of the energy (with A) and of the base, built from config.optim (optax).

config.optim.energy and config.optim.base each hold
  learning_rate  initial step size of Adam
  b1, b2         Adam's moment decay rates (paper: 0.5, 0.999)
  decay_rate     exponential learning-rate decay factor per `decay_steps` updates (1.0 = constant)
  decay_steps    updates over which the rate is multiplied by `decay_rate` (smoothly, not staircase)
The energy optimiser updates the energy parameters and the scalar A together. With
config.train.soft_clip the energy's gradients first go through g -> 2g / (1 + g^2)
(kale.soft_clip_gradients), as in the reference code; A's gradient does not (that map is not
monotone for |g| > 1; see kale.soft_clip_gradients).

Optimisers are described by hashable OptimSpec tuples so that step functions built from equal
configs are equal (and compiled once); `adam` turns a description into an optax transformation.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import ml_collections
import optax

from kale_jax import kale


class OptimSpec(NamedTuple):
    """Adam with exponential learning-rate decay (see the module docstring for the fields)."""
    learning_rate: float
    b1: float
    b2: float
    decay_rate: float
    decay_steps: int
    soft_clip: bool = False  # g -> 2g / (1 + g^2) before Adam


def optim_spec(optim_config: ml_collections.ConfigDict, soft_clip: bool = False) -> OptimSpec:
    """The OptimSpec of config.optim.energy or config.optim.base."""
    return OptimSpec(float(optim_config.learning_rate), float(optim_config.b1),
                     float(optim_config.b2), float(optim_config.decay_rate),
                     int(optim_config.decay_steps), bool(soft_clip))


def learning_rate_schedule(spec: OptimSpec) -> optax.Schedule:
    """lr(t) = learning_rate * decay_rate ** (t / decay_steps), t counting this optimiser's updates."""
    if spec.decay_rate == 1.0:
        return optax.constant_schedule(spec.learning_rate)
    return optax.exponential_decay(init_value=spec.learning_rate,
                                   transition_steps=spec.decay_steps, decay_rate=spec.decay_rate)


def adam(spec: OptimSpec) -> optax.GradientTransformation:
    """[soft clip ->] Adam with the spec's moment rates and learning-rate schedule."""
    transforms = [kale.soft_clip_gradients(exclude=("log_partition",))] if spec.soft_clip else []
    return optax.chain(*transforms,
                       optax.adam(learning_rate_schedule(spec), b1=spec.b1, b2=spec.b2))


def scale_updates(updates, plateau):
    """`updates` times the plateau scheduler's learning-rate scale (kale_jax.train.plateau).

    Adam's update is -lr(t) * m_hat / (sqrt(v_hat) + eps) and its moments do not depend on lr,
    so multiplying the update by s is exactly Adam with learning rate s * lr(t). The scale lives
    in the TrainState (state.plateau.scale), so a change needs no recompilation and a resume
    restores it.

    Args:
      updates: a pytree of optimiser updates.
      plateau: the state's PlateauState, or None (no scheduler: updates returned unchanged).
    Returns:
      the scaled updates (same tree and dtypes).
    """
    if plateau is None:
        return updates
    return jax.tree_util.tree_map(lambda u: u * plateau.scale.astype(u.dtype), updates)


def energy_spec(config: ml_collections.ConfigDict) -> OptimSpec:
    """Optimiser of {'energy': energy params, 'log_partition': A}; soft clip from config.train."""
    return optim_spec(config.optim.energy, soft_clip=config.train.soft_clip)


def base_spec(config: ml_collections.ConfigDict) -> OptimSpec:
    """Optimiser of the generator parameters."""
    return optim_spec(config.optim.base)
