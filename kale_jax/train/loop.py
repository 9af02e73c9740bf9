"""train_and_evaluate: the training run, from a config to checkpoints, metrics and pictures.

Order of a run:
  1. validate the config (before anything is built or compiled);
  2. build networks, optimisers, the step functions and the device wrapper (Trainer);
  3. resume from the latest checkpoint in WORKDIR/checkpoints, or start fresh: initialise the
     networks and set A by streaming Monte Carlo over `train.a_init_batches` base batches;
  4. iterate: before base step t, schedule.energy_steps_before(t) energy steps, then the base step
     (one compiled energy step and one compiled base step, dispatched asynchronously);
  5. every log_every steps: metrics.jsonl / TensorBoard and a progress line (rate, ETA), with a
     finiteness check; every eval_every steps and at the end: evaluation (evaluate.py); every
     checkpoint_every steps and at the end: an asynchronous checkpoint of finite parameters;
  6. on SIGTERM (preemption) or SIGINT (Ctrl-C; a second one interrupts at once): save at the
     next step boundary, wait for the save, return normally.

Faults (see the README's Troubleshooting): a bad config or workdir raises before anything is
compiled or written; a second run on a workdir in use raises WorkdirBusyError naming the first
(kale_jax.workdir_lock: a run holds WORKDIR/.lock from before it opens the checkpoints until it
returns); a non-finite loss or parameter raises NonFiniteError naming the step and the last good
checkpoint, and nothing non-finite is ever saved; a failed write (a full disk: a checkpoint, a
metrics row, a picture, an event file) stops the run at the next step boundary with StorageError
naming what failed, the free space, the last complete checkpoint and how to resume (no temporary
checkpoint directory or half metrics row is left; kale_jax.storage); on resume, an unreadable
latest checkpoint is reported in one warning line, set aside, and the previous one is used.
"Saved checkpoint at step N" is logged once step N is committed (kale_jax.checkpoint), and the
last line of a run names the last committed checkpoint.
config.debug (configs/default.py) can force a NaN, a full disk or slow the steps down, for tests
(kale_jax.train.faults).
Steps 1-2 and the GEBM's iteration are this module's; the rest of the run is run_loop.run, shared
with the EBM baseline's run (ebm_loop.train_ebm).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kale_jax import data
from kale_jax.errors import ConfigError
from kale_jax.train import evaluate, models, optim, parallel, run_loop, schedule, steps
from kale_jax.train import plateau as plateau_lib
from kale_jax.train import state as state_lib
from kale_jax.train.state import TrainState
from kale_jax.train import validate as validate_lib
from kale_jax.train.validate import validate
# The run around the trainer (checkpoints, lock, loop, faults) is run_loop's; these names stay
# importable from here.
from kale_jax.train.run_loop import (  # pylint: disable=unused-import
    CHECKPOINT_DIR, close_quietly, make_workdir, stop_on_write_failure)


def step_spec(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> steps.StepSpec:
    """The static description of the training steps for a config and dataset."""
    generator, energy = models.build(config, info)
    floor = config.model.energy_floor
    return steps.StepSpec(
        generator=generator, energy=energy, latent_dim=models.latent_dim(config, info),
        global_batch_size=config.train.batch_size, criterion=config.train.criterion,
        penalty=config.train.penalty, penalty_weight=float(config.train.penalty_weight),
        energy_floor=None if floor is None else float(floor),
        energy_optim=optim.energy_spec(config), base_optim=optim.base_spec(config))


# Compiled functions are cached by (wrapper, devices, step spec, static count): equal configs share
# them, so a second run in the same process (a resume, a notebook) does not recompile.
@functools.lru_cache(maxsize=None)
def _wrapped_step(kind: str, devices: tuple, spec: steps.StepSpec, which: str) -> Callable:
    step = {"energy": steps.energy_step, "base": steps.base_step,
            "base_mle": steps.mle_base_step, "base_gebm_mle": steps.gebm_mle_base_step,
            "base_frozen": steps.frozen_base_step}[which]
    return parallel.DataParallel(kind, devices).wrap(functools.partial(step, spec),
                                                     batch_axes=(0,))


@functools.lru_cache(maxsize=None)
def _wrapped_init_log_partition(kind: str, devices: tuple, spec: steps.StepSpec,
                                num_batches: int) -> Callable:
    return parallel.DataParallel(kind, devices).wrap(
        functools.partial(steps.init_log_partition, spec, num_batches))


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _fresh_state(spec: steps.StepSpec, data_shape: tuple, seed: jax.Array,
                 plateau_shape: Optional[tuple] = None) -> TrainState:
    """Initialised networks and optimisers (one copy), A = 0, from the run's seed; with
    `plateau_shape` (lookback, num_samples) a fresh plateau scheduler state."""
    key_generator, key_energy, key_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = jnp.zeros((1, spec.latent_dim), jnp.float32)
    x = jnp.zeros((1,) + data_shape, jnp.float32)
    return state_lib.create(
        generator_variables=spec.generator.init(key_generator, z, train=False),
        energy_variables=spec.energy.init(key_energy, x, train=False),
        energy_tx=spec.energy_tx, base_tx=spec.base_tx, key=key_run,
        plateau=None if plateau_shape is None else plateau_lib.init(*plateau_shape))


class Trainer:
    """The compiled pieces of a run for one config and one device set.

    Args:
      config: the full training config (validated here, before anything is compiled).
      devices: devices to train on (default: all).
    """

    def __init__(self, config: ml_collections.ConfigDict,
                 devices: Optional[Sequence[Any]] = None):
        validate(config, len(jax.devices() if devices is None else devices))
        if config.train.criterion == validate_lib.EBM_CRITERION:
            raise ConfigError("config.train.criterion='ebm' is an energy-only model without a "
                              "base or latent sampler; train it with train_and_evaluate or "
                              "kale_jax.train.ebm_loop.train_ebm (its samples come from training's "
                              "evaluation)")
        self.parallel = parallel.DataParallel(config.parallel, devices)
        self.config = config
        self.info = data.get_info(config.data)
        self.spec = step_spec(config, self.info)
        self._cache_key = (config.parallel, tuple(self.parallel.devices), self.spec)
        # The plateau scheduler (config.train.plateau; validated above): its state's shape is
        # needed for every state, its reference data only at the first check (`plateau`), so
        # restoring a checkpoint for sampling reads none of it.
        self.plateau_spec = plateau_lib.spec_from_config(config)
        self._plateau = None
        self._plateau_shape = (None if self.plateau_spec is None
                               else (self.plateau_spec.lookback, self.plateau_spec.num_samples))
        refine_weight = config.train.get("refine_penalty_weight")
        self.refine_from = config.train.get("refine_from")
        # The refinement phase's energy step differs from the joint phase's only in its penalty.
        self._refine_key = (config.parallel, tuple(self.parallel.devices), dataclasses.replace(
            self.spec, penalty_weight=float(
                self.spec.penalty_weight if refine_weight is None else refine_weight)))

    @property
    def plateau(self) -> Optional[plateau_lib.Plateau]:
        """The run's plateau scheduler (built at first use), or None when it is off."""
        if self._plateau is None and self.plateau_spec is not None:
            self._plateau = plateau_lib.Plateau(self.config, self.plateau_spec,
                                                self.spec.generator, self.spec.latent_dim,
                                                self.info)
        return self._plateau

    def refining(self, base_step: int) -> bool:
        """Whether iteration `base_step` (0-based) belongs to the refinement phase: energy steps
        (with train.refine_penalty_weight) against a frozen base."""
        return self.refine_from is not None and base_step >= self.refine_from

    # ------------------------------------------------------------------------------ the state
    def init_state(self) -> TrainState:
        """A fresh replicated state with A set by Monte Carlo over a_init_batches base batches."""
        fresh = _fresh_state(self.spec, tuple(self.info.shape), self.config.seed,
                             self._plateau_shape)
        init_a = _wrapped_init_log_partition(*self._cache_key, self.config.train.a_init_batches)
        return init_a(self.parallel.replicate(fresh))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and restore shardings of one copy of the state (for checkpoints)."""
        sharding = self.parallel.state_sharding
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            jax.eval_shape(_fresh_state, self.spec, tuple(self.info.shape), self.config.seed,
                           self._plateau_shape))

    # ------------------------------------------------------------------------------- training
    def energy_step_fn(self, refine: bool = False) -> Callable:
        """The compiled energy step: (state, sharded batch) -> (state, metrics); with `refine`,
        the refinement phase's (train.refine_penalty_weight)."""
        return _wrapped_step(*(self._refine_key if refine else self._cache_key), "energy")

    def base_step_fn(self, refine: bool = False) -> Callable:
        """The compiled base step: (state, sharded batch) -> (state, metrics); the maximum-
        likelihood step of the flow for config.model.base_objective='mle', of the GEBM for
        'gebm_mle'; with `refine`, the frozen base's (only the step counter moves)."""
        which = "base_frozen" if refine else {
            "kale": "base", "mle": "base_mle", "gebm_mle": "base_gebm_mle"}[
                self.config.model.get("base_objective", "kale")]
        return _wrapped_step(*self._cache_key, which)

    def run_iteration(self, state: TrainState, base_step: int, batches) -> tuple:
        """schedule.energy_steps_before(base_step) energy steps, then base step `base_step`
        (in the refinement phase, `refining`, the base step only advances the counter).

        One compiled energy step and one compiled base step serve every iteration (the count of
        energy steps is a host loop, so warm-up rounds need no second compilation). Calls are
        dispatched asynchronously: the host prepares the next batches while the devices compute,
        and only waits when metrics are read.

        Args:
          state: replicated state whose base_step is `base_step` (donated).
          base_step: the coming base step (host int; picks the schedule).
          batches: iterator of this host's data batches, one per energy step; the base step
            reuses the last one (its data term does not depend on the generator and only enters
            the reported loss).
        With the plateau scheduler, after every train.plateau.every-th base step (outside the
        refinement phase) it checks the held-out metric and may decay both learning rates
        (plateau.Plateau; the new scheduler state goes into the returned state, its numbers into
        the metrics).

        Returns:
          (new replicated state, metrics in the device layout: the last energy step's and the
          base step's, and the plateau check's).
        """
        refine = self.refining(base_step)
        energy_step, base_step_fn = self.energy_step_fn(refine), self.base_step_fn(refine)
        for _ in range(schedule.energy_steps_before(base_step, self.config)):
            x = self.parallel.shard_batch(next(batches))
            state, energy_metrics = energy_step(state, x)
        state, base_metrics = base_step_fn(state, x)
        metrics = {**energy_metrics, **base_metrics}
        if not refine and plateau_lib.is_check_step(self.plateau_spec, base_step + 1):
            new_plateau, scalars = self.plateau(self.parallel.local_copy(state), base_step + 1)
            state = state.replace(plateau=self.parallel.replicate(new_plateau))
            metrics.update(self.parallel.replicate(
                {k: np.float32(v) for k, v in scalars.items()}))
        return state, metrics

    def host_metrics(self, metrics: Any) -> Dict[str, float]:
        """Device metrics -> {name: float} (blocks until they are computed)."""
        one = self.parallel.local_copy(metrics)
        return {k: float(v) for k, v in jax.device_get(one).items()}


def _start(config: ml_collections.ConfigDict, one: TrainState) -> tuple:
    """(base step reached, data batch to start from) of a state; ConfigError when its count of
    energy steps is not the config's schedule's."""
    base_step, energy_step = int(one.base_step), int(one.energy_step)
    if energy_step != schedule.energy_steps_until(base_step, config):
        raise ConfigError(
            f"checkpoint at base step {base_step} has taken {energy_step} energy steps but "
            f"the config's schedule (train.n_critic, n_critic_warmup, warmup_every) gives "
            f"{schedule.energy_steps_until(base_step, config)}; use the checkpoint's schedule "
            "or a new --workdir")
    return base_step, energy_step


def _poison(state: TrainState) -> TrainState:
    """The state with NaN energy parameters (config.debug.nan_at_step)."""
    logging.warning("config.debug.nan_at_step: setting the energy parameters to NaN.")
    return state.replace(energy_params=jax.tree_util.tree_map(
        lambda p: p * jnp.nan, state.energy_params))


_RUN = run_loop.RunSpec(
    format="kale_jax.train.TrainState", start=_start, poison=_poison,
    final_eval_key="kale_heldout", resume_keys=validate_lib.RESUME_KEYS,
    fresh_line="Starting a fresh run in %(workdir)s (no checkpoint found); %(num_steps)d base "
               "steps on %(devices)d device(s) with %(parallel)s.",
    resume_line="Resuming from step %(step)d (checkpoint in %(directory)s); %(num_steps)d base "
                "steps on %(devices)d device(s) with %(parallel)s.",
    step_word="base step", steps_done="base steps", checked="parameters",
    diverge_hint="lower optim.*.learning_rate or raise train.penalty_weight")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       config_source: Optional[str] = None,
                       devices: Optional[Sequence[Any]] = None) -> TrainState:
    """Trains a GEBM with KALE (or a GAN baseline) and evaluates it; resumes from `workdir`.

    Args:
      config: the full config (configs/default.py documents every key).
      workdir: output directory: checkpoints/, metrics.jsonl, TensorBoard events, samples/,
        config.json. A run pointed at a workdir with checkpoints continues from the latest one.
      config_source: how the config was given (e.g. "configs/default.py" plus command-line
        overrides), recorded in the checkpoint metadata next to the full config.
      devices: devices to train on (default: all devices).
    Returns:
      the final state, one copy (see DataParallel.unreplicate).
    Raises:
      ConfigError (a ValueError): bad config, or one that differs from the checkpoint's (before
        any compilation).
      CheckpointError: the workdir cannot be used, or no checkpoint in it can be restored.
      WorkdirBusyError (a CheckpointError): another live run holds the workdir (named in the
        message); nothing was written.
      NonFiniteError (a FloatingPointError): a logged loss or the parameters became non-finite;
        the message names the step and the last good checkpoint.
      StorageError (an OSError): a write to the workdir failed (e.g. a full disk); the message
        names what failed, the free space, the last complete checkpoint and how to resume.

    config.train.criterion='ebm' trains the energy-only EBM baseline instead
    (kale_jax.train.ebm_loop.train_ebm; it returns an EBMState).
    """
    if config.train.get("criterion") == validate_lib.EBM_CRITERION:
        from kale_jax.train import ebm_loop  # pylint: disable=g-import-not-at-top
        return ebm_loop.train_ebm(config, workdir, config_source=config_source, devices=devices)
    return run_loop.run(
        config, workdir, _RUN, lambda: Trainer(config, devices),
        lambda trainer: evaluate.Evaluator(config, trainer.spec, trainer.info, workdir,
                                           write_pictures=jax.process_index() == 0),
        config_source=config_source)
