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
config.debug (configs/default.py) can force a NaN, a full disk or slow the steps down, for tests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kale_jax import checkpoint as checkpoint_lib
from kale_jax import data, storage, workdir_lock
from kale_jax.errors import CheckpointError, ConfigError, NonFiniteError
from kale_jax.train import evaluate, models, optim, outputs, parallel, schedule, steps
from kale_jax.train import state as state_lib
from kale_jax.train.state import TrainState
from kale_jax.train import validate as validate_lib
from kale_jax.train.validate import validate

CHECKPOINT_DIR = "checkpoints"


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fresh_state(spec: steps.StepSpec, data_shape: tuple, seed: jax.Array) -> TrainState:
    """Initialised networks and optimisers (one copy), A = 0, from the run's seed."""
    key_generator, key_energy, key_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = jnp.zeros((1, spec.latent_dim), jnp.float32)
    x = jnp.zeros((1,) + data_shape, jnp.float32)
    return state_lib.create(
        generator_variables=spec.generator.init(key_generator, z, train=False),
        energy_variables=spec.energy.init(key_energy, x, train=False),
        energy_tx=spec.energy_tx, base_tx=spec.base_tx, key=key_run)


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
        refine_weight = config.train.get("refine_penalty_weight")
        self.refine_from = config.train.get("refine_from")
        # The refinement phase's energy step differs from the joint phase's only in its penalty.
        self._refine_key = (config.parallel, tuple(self.parallel.devices), dataclasses.replace(
            self.spec, penalty_weight=float(
                self.spec.penalty_weight if refine_weight is None else refine_weight)))

    def refining(self, base_step: int) -> bool:
        """Whether iteration `base_step` (0-based) belongs to the refinement phase: energy steps
        (with train.refine_penalty_weight) against a frozen base."""
        return self.refine_from is not None and base_step >= self.refine_from

    # ------------------------------------------------------------------------------ the state
    def init_state(self) -> TrainState:
        """A fresh replicated state with A set by Monte Carlo over a_init_batches base batches."""
        fresh = _fresh_state(self.spec, tuple(self.info.shape), self.config.seed)
        init_a = _wrapped_init_log_partition(*self._cache_key, self.config.train.a_init_batches)
        return init_a(self.parallel.replicate(fresh))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and restore shardings of one copy of the state (for checkpoints)."""
        sharding = self.parallel.state_sharding
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            jax.eval_shape(_fresh_state, self.spec, tuple(self.info.shape), self.config.seed))

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
        Returns:
          (new replicated state, metrics in the device layout: the last energy step's and the
          base step's).
        """
        refine = self.refining(base_step)
        energy_step, base_step_fn = self.energy_step_fn(refine), self.base_step_fn(refine)
        for _ in range(schedule.energy_steps_before(base_step, self.config)):
            x = self.parallel.shard_batch(next(batches))
            state, energy_metrics = energy_step(state, x)
        state, base_metrics = base_step_fn(state, x)
        return state, {**energy_metrics, **base_metrics}

    def host_metrics(self, metrics: Any) -> Dict[str, float]:
        """Device metrics -> {name: float} (blocks until they are computed)."""
        one = self.parallel.local_copy(metrics)
        return {k: float(v) for k, v in jax.device_get(one).items()}


class _StopFlag:
    """Set by SIGTERM (preemption notice) or SIGINT (Ctrl-C); the loop saves and returns at the
    next step boundary. After the first SIGINT, a second one raises KeyboardInterrupt at once (the
    checkpoints on disk stay complete: saves are atomic)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        del frame
        logging.warning("Received signal %d: saving a checkpoint and stopping at the next step "
                        "boundary.", signum)
        self.requested = True
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def uninstall(self) -> None:
        if self._previous is not None:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = None


def _metadata(config: ml_collections.ConfigDict, config_source: Optional[str]) -> Dict[str, Any]:
    return {"config": json.loads(config.to_json_best_effort()),
            "config_source": config_source or "",
            "format": "kale_jax.train.TrainState"}


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
    if jax.process_count() == 1:  # a workdir in use stops us before anything slow is built
        workdir_lock.check_free(workdir)
    trainer = Trainer(config, devices)
    validate_lib.workdir(workdir)
    # Built before anything is compiled, so bad evaluation settings fail early too.
    evaluator = evaluate.Evaluator(config, trainer.spec, trainer.info, workdir,
                                   write_pictures=jax.process_index() == 0)
    make_workdir(workdir)
    with workdir_lock.hold(workdir):  # before anything in the workdir is read or written
        return _train(config, workdir, trainer, evaluator, config_source)


def _train(config: ml_collections.ConfigDict, workdir: str, trainer: Trainer,
           evaluator: evaluate.Evaluator, config_source: Optional[str]) -> TrainState:
    """train_and_evaluate once the config is checked and the workdir locked."""
    num_steps = config.train.num_steps
    is_lead = jax.process_index() == 0
    metadata = _metadata(config, config_source)
    checkpoints = checkpoint_lib.Checkpoints(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.train.keep_checkpoints,
        metadata=metadata)
    try:  # checks of the checkpoint come before anything else is written to the workdir
        latest = checkpoints.latest_step()
        if latest is None:
            logging.info("Starting a fresh run in %s (no checkpoint found); %d base steps on %d "
                         "device(s) with %s.", workdir, num_steps, trainer.parallel.num_devices,
                         config.parallel)
            state = trainer.init_state()
        else:
            validate_lib.against_checkpoint(
                config, checkpoints.step_metadata(latest) or checkpoints.metadata(),
                directory=checkpoints.directory)
            latest, restored, skipped = checkpoints.restore_newest_readable(
                trainer.abstract_state(), is_good=checkpoint_lib.all_finite)
            for bad, reason in skipped:
                logging.warning("Checkpoint step %d in %s is unreadable (%s); moved it to %s and "
                                "using step %d.", bad, checkpoints.directory, reason,
                                checkpoints.directory + checkpoint_lib.UNREADABLE_SUFFIX, latest)
            logging.info("Resuming from step %d (checkpoint in %s); %d base steps on %d "
                         "device(s) with %s.", latest, checkpoints.directory, num_steps,
                         trainer.parallel.num_devices, config.parallel)
            state = trainer.parallel.replicate(restored)
        one = trainer.parallel.local_copy(state)
        base_step, energy_step = int(one.base_step), int(one.energy_step)
        if energy_step != schedule.energy_steps_until(base_step, config):
            raise ConfigError(
                f"checkpoint at base step {base_step} has taken {energy_step} energy steps but "
                f"the config's schedule (train.n_critic, n_critic_warmup, warmup_every) gives "
                f"{schedule.energy_steps_until(base_step, config)}; use the checkpoint's schedule "
                "or a new --workdir")
    except BaseException:
        checkpoints.close()
        raise
    writer = None
    stop = _StopFlag()
    debug = config.get("debug") or {}
    nan_at_step = debug.get("nan_at_step", None)
    sleep_per_step = debug.get("sleep_per_step_s", None) or 0.0
    full_disk_at = debug.get("full_disk_at_step", None) or -1

    def diverged(what: str) -> NonFiniteError:
        checkpoints.wait()  # the last good checkpoint is the last committed one
        return NonFiniteError(
            f"{what}. Last good checkpoint: "
            f"{_describe(checkpoints.committed_step, checkpoints.directory)}; "
            "rerunning with this --workdir resumes from it (lower optim.*.learning_rate or "
            "raise train.penalty_weight, or it may diverge again)")

    def check_finite(step: int, state: TrainState, what: str) -> None:
        if not checkpoint_lib.all_finite(trainer.parallel.local_copy(state)):
            raise diverged(f"non-finite parameters at base step {step}; {what}")

    def save(step: int, state: TrainState) -> None:
        check_finite(step, state, "not saved")
        checkpoints.save(step, trainer.parallel.unreplicate(state), metadata=metadata)

    def evaluate_now(step: int) -> Dict[str, float]:
        check_finite(step, state, "not evaluated")
        started = time.monotonic()
        results = evaluator(trainer.parallel.local_copy(state), step)
        results["eval_seconds"] = time.monotonic() - started
        progress.pause(results["eval_seconds"])
        logging.info("eval at step %d: %s", step,
                     " ".join(f"{k}={v:.4g}" for k, v in results.items()))
        writer.write(step, results)
        writer.flush()
        return results

    results = None
    try:
        with stop_on_write_failure(workdir, checkpoints):
            if is_lead:
                storage.write_atomically(os.path.join(workdir, "config.json"),
                                         config.to_json_best_effort(indent=2),
                                         what="config.json")
            writer = outputs.MetricWriter(
                workdir, tensorboard=config.train.get("tensorboard", True), enabled=is_lead)
            # Records after the checkpoint (all of them on a fresh start) are from an attempt
            # that stopped before saving; the steps will be logged again.
            writer.truncate_after(latest or 0)
            batches = data.train_batches(
                config.data, batch_size=config.train.batch_size, seed=config.seed,
                start_step=energy_step, process_index=jax.process_index(),
                process_count=jax.process_count())
            progress = outputs.Progress(base_step, num_steps)
            stop.install()
            while base_step < num_steps:
                if base_step + 1 == nan_at_step:  # debug: base step nan_at_step computes with NaNs
                    state = _poison(state)
                state, step_metrics = trainer.run_iteration(state, base_step, batches)
                base_step += 1
                if sleep_per_step:
                    time.sleep(sleep_per_step)
                if full_disk_at > 0:  # debug: every write from base step full_disk_at fails
                    storage.simulate_full_disk(base_step >= full_disk_at)
                checkpoints.poll()  # a save that failed in the background stops the run here
                if (base_step % config.train.log_every == 0 or base_step == num_steps
                        or stop.requested):
                    scalars = trainer.host_metrics(step_metrics)
                    bad = sorted(k for k, v in scalars.items() if not np.isfinite(v))
                    if bad:
                        raise diverged(f"non-finite {bad} at base step {base_step}")
                    text, rate = progress.line(base_step, scalars)
                    logging.info(text)
                    scalars["steps_per_sec"] = rate
                    writer.write(base_step, scalars)
                if stop.requested:
                    break  # save below at once: preemption leaves little time for evaluation
                if base_step % config.train.eval_every == 0 or base_step == num_steps:
                    results = evaluate_now(base_step)
                if base_step % config.train.checkpoint_every == 0 or base_step == num_steps:
                    save(base_step, state)
            if stop.requested:
                save(base_step, state)
            elif results is None and not _has_final_eval(workdir, num_steps):
                results = evaluate_now(num_steps)  # resumed a run stopped before its last eval
            checkpoints.wait()
            writer.close()
        committed = _describe(checkpoints.committed_step, checkpoints.directory)
        if stop.requested:
            logging.warning("Stopped by signal at step %d after saving a checkpoint; last "
                            "committed checkpoint: %s; rerun with the same workdir to resume.",
                            base_step, committed)
        else:
            logging.info("Final metrics: %s",
                         " ".join(f"{k}={v:.4g}" for k, v in (results or {}).items()))
            logging.info("Finished %d base steps; last committed checkpoint: %s.", num_steps,
                         committed)
    finally:
        stop.uninstall()
        close_quietly(checkpoints, writer)
    return trainer.parallel.unreplicate(state)


def make_workdir(workdir: str) -> None:
    """Creates `workdir` (CheckpointError, exit status 2, when it cannot be)."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"--workdir={workdir} cannot be created: {error}") from error


@contextlib.contextmanager
def stop_on_write_failure(workdir: str, checkpoints: checkpoint_lib.Checkpoints):
    """Within: a failed write (storage.WriteFailed) stops the run with StorageError (exit
    status 4), whose one line names what failed, the free space left, the last complete
    checkpoint (a save still pending is waited for first) and how to resume."""
    try:
        yield
    except storage.WriteFailed as failure:
        storage.simulate_full_disk(False)
        with contextlib.suppress(storage.WriteFailed):
            checkpoints.wait()  # committed, or discarded (the disk is full for it too)
        raise storage.run_stopped(failure, workdir=os.path.abspath(workdir),
                                  checkpoint_dir=checkpoints.directory,
                                  committed_step=checkpoints.committed_step) from failure
    finally:
        storage.simulate_full_disk(False)


def close_quietly(checkpoints: checkpoint_lib.Checkpoints,
                  writer: Optional[outputs.MetricWriter]) -> None:
    """Closes a run's outputs on its way out. A run that ends normally has flushed them already;
    one stopped by an error reports that error, so a further write failure here is one warning
    line."""
    for close in (checkpoints.close, writer.close if writer is not None else None):
        if close is None:
            continue
        try:
            close()
        except storage.WriteFailed as failure:
            logging.warning("While stopping: %s", failure)


def _check_compatible(saved: Optional[Dict[str, Any]], current: Dict[str, Any],
                      directory: str) -> None:
    """Alias of validate.against_checkpoint (kept for older callers): ConfigError on mismatch."""
    validate_lib.against_checkpoint(current, saved, directory=directory)


def _poison(state: TrainState) -> TrainState:
    """The state with NaN energy parameters (config.debug.nan_at_step)."""
    logging.warning("config.debug.nan_at_step: setting the energy parameters to NaN.")
    return state.replace(energy_params=jax.tree_util.tree_map(
        lambda p: p * jnp.nan, state.energy_params))


def _has_final_eval(workdir: str, step: int) -> bool:
    path = os.path.join(workdir, outputs.METRICS_FILE)
    return os.path.exists(path) and any(
        r["step"] == step and "kale_heldout" in r for r in outputs.read_metrics(workdir))


def _describe(step: Optional[int], directory: str) -> str:
    return "none" if step is None else f"step {step} in {directory}"
