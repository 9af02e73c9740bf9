"""TrainState: everything a KALE run needs to continue exactly where it stopped.

A flax.struct.dataclass (a pytree), replicated over devices during training and saved whole by
the checkpoint manager.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """The parameters, mutable network state, optimiser states and counters of a run.

    Attributes:
      generator_params: the base network's 'params' collection.
      generator_state: the base network's 'batch_stats' collection (BatchNorm running averages);
        an empty dict for a network without state.
      energy_params: the energy network's 'params' collection.
      energy_state: the energy network's 'batch_stats' collection (BatchNorm averages,
        spectral-norm power-iteration vectors); may be empty.
      log_partition: the scalar A (float32, nats), trained with the energy.
      energy_opt_state: optax state of the energy optimiser over
        {'energy': energy_params, 'log_partition': log_partition}.
      base_opt_state: optax state of the base optimiser over generator_params.
      base_step: int32 scalar, base steps taken so far (the run's step, used for checkpoints).
      energy_step: int32 scalar, energy steps taken so far (indexes the data batches).
      key: the run's root PRNG key (raw uint32 key data, shape (2,)); per-step keys are derived
        from it with fold_in on the step counters, so it never changes during training.
      plateau: None (no plateau scheduler: the tree of every checkpoint written before it
        existed), or the scheduler's kale_jax.train.plateau.PlateauState (learning-rate scale,
        its test's buffer and counters), saved and restored with the rest.
    """
    generator_params: Any
    generator_state: Any
    energy_params: Any
    energy_state: Any
    log_partition: Array
    energy_opt_state: optax.OptState
    base_opt_state: optax.OptState
    base_step: Array
    energy_step: Array
    key: Array
    plateau: Any = None

    def generator_variables(self) -> Dict[str, Any]:
        """{'params': ..., 'batch_stats': ...} for generator.apply."""
        return variables(self.generator_params, self.generator_state)

    def energy_variables(self) -> Dict[str, Any]:
        """{'params': ..., 'batch_stats': ...} for energy.apply."""
        return variables(self.energy_params, self.energy_state)

    def energy_trainables(self) -> Dict[str, Any]:
        """The pytree the energy optimiser updates: energy params and A."""
        return {"energy": self.energy_params, "log_partition": self.log_partition}


def variables(params: Any, state: Mapping[str, Any]) -> Dict[str, Any]:
    """A Linen variables dict; 'batch_stats' only when the network has mutable state."""
    out = {"params": params}
    if state:
        out["batch_stats"] = state
    return out


def split_variables(variables_: Mapping[str, Any]) -> tuple:
    """(params, batch_stats or {}) from a Linen variables dict."""
    unknown = set(variables_) - {"params", "batch_stats"}
    if unknown:
        raise ValueError(f"network variables have collections {sorted(unknown)}; only 'params' and "
                         "'batch_stats' are supported (docs/design.md, networks)")
    return variables_["params"], dict(variables_.get("batch_stats", {}))


def create(*, generator_variables: Mapping[str, Any], energy_variables: Mapping[str, Any],
           energy_tx: optax.GradientTransformation, base_tx: optax.GradientTransformation,
           key: Array, log_partition: float | Array = 0.0, plateau: Any = None) -> TrainState:
    """A fresh TrainState at step 0 from initialised network variables.

    `key` is the run's root key (raw uint32 PRNG key data of shape (2,)); `plateau` the plateau
    scheduler's initial state (None: no scheduler).
    """
    g_params, g_state = split_variables(generator_variables)
    e_params, e_state = split_variables(energy_variables)
    log_partition = jnp.asarray(log_partition, jnp.float32)
    return TrainState(
        generator_params=g_params,
        generator_state=g_state,
        energy_params=e_params,
        energy_state=e_state,
        log_partition=log_partition,
        energy_opt_state=energy_tx.init({"energy": e_params, "log_partition": log_partition}),
        base_opt_state=base_tx.init(g_params),
        base_step=jnp.zeros((), jnp.int32),
        energy_step=jnp.zeros((), jnp.int32),
        key=jnp.asarray(key, jnp.uint32),
        plateau=plateau,
    )
