"""train_ebm: the run of the energy-only EBM baseline (config.train.criterion = 'ebm').

    python -m experiments.train --config=configs/ebm.py --workdir=workdirs/ebm_ring

The model and its step are kale_jax.ebm (maximum likelihood with replay-buffer Langevin in data
space); this module is the run around it, built from the GEBM run's pieces (loop.py): config
validation before anything is compiled, data-parallel steps over all devices
(parallel.DataParallel: random draws for the global batch, all-gathered energies, pmean'd
gradients, so 1 and 4 devices train the same parameters), orbax checkpoints resumed from the
latest readable one (never a non-finite one), WORKDIR/metrics.jsonl with progress lines, and the
same handling of faults: signals (SIGTERM / SIGINT save and return), the workdir lock, failed
writes (StorageError, exit status 4) and honest save logging. One EBM update per step:
config.train.num_steps counts EBM updates, and step t trains on data batch t.

Evaluation (every train.eval_every steps and at the end), on one device:
  mmd_ebm            unbiased MMD^2 between `eval.num_samples` held-out examples and as many EBM
                     samples: Langevin from fresh starts (config.ebm.init) for config.ebm.eval_steps
                     steps with the training sampler's step size, noise and clip. These test the
                     energy as a density; short training chains from noise would not.
  mmd_ebm_buffer     the same for a random subset of the replay buffer (the persistent chains the
                     negatives come from)
  energy_heldout, energy_ebm   mean energy of the held-out examples and of the EBM samples
  ring / grid only:  ebm_{share_within_3std,modes_covered} and ebm_buffer_... (toys)
  exact_metrics:     when kale_jax.data provides exact_metrics(data_config, samples) -> dict
                     (per-dataset ground truth), its entries for the EBM samples, prefixed 'ebm_'
MMD uses the GEBM evaluation's kernel rule (evaluate.Evaluator): a Gaussian mixture with
bandwidths median heuristic x (0.5, 1, 2) from held-out data alone, so runs are comparable.
Pictures: WORKDIR/samples/scatter_<step>.png (data / EBM / buffer) for 2-D and 3-D data,
ebm_<step>.png image grids for images.

Evaluation uses the same key at every evaluation (from the seed, independent of training draws),
so successive pictures start the same chains.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kale_jax import checkpoint as checkpoint_lib
from kale_jax import data, ebm, metrics, storage, workdir_lock
from kale_jax.errors import ConfigError, NonFiniteError
from kale_jax.train import models, optim, outputs, parallel
from kale_jax.train import validate as validate_lib
from kale_jax.train.loop import (CHECKPOINT_DIR, _describe, _StopFlag, close_quietly,
                                 make_workdir, stop_on_write_failure)

FORMAT = "kale_jax.ebm.EBMState"
EVAL_STREAM = 0xE7A1  # fold_in of the seed's key for evaluation (not a training draw)


def ebm_spec(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> ebm.EBMSpec:
    """The static EBM settings of a (validated) config for a dataset."""
    e = config.ebm
    if e.init == "uniform":
        initial = ebm.InitialDistribution("uniform", low=float(e.init_box[0]),
                                          high=float(e.init_box[1]))
    else:
        initial = ebm.InitialDistribution("normal", scale=float(e.init_scale))
    floor = config.model.energy_floor
    return ebm.EBMSpec(
        energy=models.build_energy(config, info), global_batch_size=config.train.batch_size,
        langevin_steps=e.langevin_steps, step_size=float(e.step_size),
        buffer_size=e.buffer_size,
        noise_scale=None if e.noise_scale is None else float(e.noise_scale),
        clip=None if e.clip is None else (float(e.clip[0]), float(e.clip[1])),
        reinit_prob=float(e.reinit_prob), initial=initial, alpha=float(e.alpha),
        energy_floor=None if floor is None else float(floor), unroll=e.get("unroll") or 1)


# Compiled functions are cached by (wrapper, devices, spec, optimiser): equal configs share them.
@functools.lru_cache(maxsize=None)
def _wrapped_step(kind: str, devices: tuple, spec: ebm.EBMSpec,
                  optim_spec: optim.OptimSpec) -> Callable:
    step = functools.partial(ebm.train_step, spec, optim.adam(optim_spec),
                             axis_name=parallel.AXIS_NAME)
    return parallel.DataParallel(kind, devices).wrap(step, batch_axes=(0,))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fresh_state(spec: ebm.EBMSpec, optim_spec: optim.OptimSpec, shape: tuple,
                 seed: jax.Array) -> ebm.EBMState:
    return ebm.init_state(jax.random.PRNGKey(seed), spec, optim.adam(optim_spec), shape)


class EBMTrainer:
    """The compiled pieces of an EBM run for one config and one device set.

    Args:
      config: the full config, train.criterion = 'ebm' (validated here).
      devices: devices to train on (default: all).
    """

    def __init__(self, config: ml_collections.ConfigDict,
                 devices: Optional[Sequence[Any]] = None):
        validate_lib.validate(config, len(jax.devices() if devices is None else devices))
        if config.train.criterion != validate_lib.EBM_CRITERION:
            raise ConfigError(f"config.train.criterion={config.train.criterion!r}: train_ebm "
                              "trains config.train.criterion='ebm' only; use train_and_evaluate")
        self.config = config
        self.parallel = parallel.DataParallel(config.parallel, devices)
        self.info = data.get_info(config.data)
        self.spec = ebm_spec(config, self.info)
        self.optim_spec = optim.energy_spec(config)
        self._cache_key = (config.parallel, tuple(self.parallel.devices), self.spec,
                           self.optim_spec)

    def init_state(self) -> ebm.EBMState:
        """A fresh replicated state from config.seed."""
        return self.parallel.replicate(_fresh_state(self.spec, self.optim_spec,
                                                    tuple(self.info.shape), self.config.seed))

    def abstract_state(self) -> ebm.EBMState:
        """Shapes, dtypes and restore shardings of one copy of the state (for checkpoints)."""
        sharding = self.parallel.state_sharding
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            jax.eval_shape(_fresh_state, self.spec, self.optim_spec, tuple(self.info.shape),
                           self.config.seed))

    def step_fn(self) -> Callable:
        """The compiled step: (replicated state (donated), sharded batch) -> (state, metrics)."""
        return _wrapped_step(*self._cache_key)

    def host_metrics(self, step_metrics: Any) -> Dict[str, float]:
        """Device metrics -> {name: float} (blocks until they are computed)."""
        one = self.parallel.local_copy(step_metrics)
        return {k: float(v) for k, v in jax.device_get(one).items()}


class EBMEvaluator:
    """Samples one copy of an EBMState, measures them against held-out data, draws pictures.

    Args:
      config: the full config (data, eval, ebm, seed).
      spec: the EBM's static settings.
      info: the dataset's DatasetInfo.
      workdir: pictures go to workdir/samples/.
      write_pictures: False on every process but the first.
    """

    def __init__(self, config: ml_collections.ConfigDict, spec: ebm.EBMSpec,
                 info: data.DatasetInfo, workdir: str, write_pictures: bool = True):
        self.config, self.spec, self.info = config, spec, info
        self.samples_dir = os.path.join(workdir, outputs.SAMPLES_DIR)
        self.write_pictures = write_pictures
        num_heldout, num_samples = config.eval.num_heldout, config.eval.num_samples
        heldout = data.eval_examples(config.data, split="test",
                                     num_examples=max(num_heldout, num_samples), seed=config.seed)
        self.heldout = heldout[:num_heldout]
        self.reference = heldout[:num_samples]
        # The GEBM evaluation's kernel (evaluate.Evaluator): bandwidths from held-out data alone.
        scales = np.asarray(metrics.DEFAULT_BANDWIDTH_SCALES, np.float32)
        half = max(num_samples // 2, 1)
        self.bandwidths = np.asarray(
            metrics.median_bandwidth(self.reference[:half], self.reference[half:])) * scales
        self.key = jax.random.fold_in(jax.random.PRNGKey(config.seed), EVAL_STREAM)
        self._evaluate = _compiled_evaluate(spec, tuple(info.shape), num_samples,
                                            min(num_samples, spec.buffer_size),
                                            config.ebm.eval_steps)

    def __call__(self, state: ebm.EBMState, step: int) -> Dict[str, float]:
        """Metrics of `state` (one copy, on one device) at step `step`; writes pictures."""
        out = jax.device_get(self._evaluate(state.params, state.energy_state,
                                            state.buffer.samples, jnp.asarray(self.heldout),
                                            self.key))
        result = {k: float(v) for k, v in out.items() if np.ndim(v) == 0}
        samples = {"ebm": out["ebm_samples"], "ebm_buffer": out["buffer_samples"]}
        for name, points in samples.items():
            result[f"mmd_{name}"] = float(metrics.mmd2(self.reference, points,
                                                       bandwidths=self.bandwidths))
        if self.info.name in ("ring", "grid"):
            from kale_jax.data import toys  # pylint: disable=g-import-not-at-top
            centres, std = toys.modes(self.config.data)
            for name, points in samples.items():
                for k, v in toys.mode_statistics(points, centres, std).items():
                    result[f"{name}_{k}"] = float(v)
        if hasattr(data, "exact_metrics"):  # per-dataset ground truth, where a dataset has one
            for k, v in data.exact_metrics(self.config.data, samples["ebm"]).items():
                result[f"ebm_{k}"] = float(v)
        if self.write_pictures:
            self._pictures(step, samples)
        return result

    def _pictures(self, step: int, samples: Dict[str, np.ndarray]) -> None:
        if self.info.kind == "image":
            shown = min(64, samples["ebm"].shape[0])
            outputs.save_image_grid(os.path.join(self.samples_dir, f"ebm_{step:07d}.png"),
                                    samples["ebm"][:shown])
        elif self.info.shape in ((2,), (3,)):
            outputs.save_scatter(
                os.path.join(self.samples_dir, f"scatter_{step:07d}.png"),
                {"data (held out)": self.reference,
                 f"EBM ({self.config.ebm.eval_steps} Langevin steps)": samples["ebm"],
                 "EBM replay buffer": samples["ebm_buffer"]},
                title=f"{self.info.name}, EBM step {step}")


@functools.lru_cache(maxsize=None)
def _compiled_evaluate(spec: ebm.EBMSpec, shape: tuple, num_samples: int, num_buffer: int,
                       eval_steps: int) -> Callable:
    """jit of the device part of the evaluation, cached so equal configs compile once."""

    def evaluate(params, energy_state, buffer_samples, heldout, key):
        key_sample, key_buffer = jax.random.split(key)
        energy = ebm.energy_fn(spec, params, energy_state)
        samples = ebm.sample(key_sample, spec, params, energy_state, num_samples, shape,
                             eval_steps)
        rows = jax.random.choice(key_buffer, buffer_samples.shape[0], (num_buffer,),
                                 replace=False)
        return {"ebm_samples": samples, "buffer_samples": buffer_samples[rows],
                "energy_heldout": jnp.mean(energy(heldout)),
                "energy_ebm": jnp.mean(energy(samples))}

    return jax.jit(evaluate)


def _metadata(config: ml_collections.ConfigDict, config_source: Optional[str]) -> Dict[str, Any]:
    return {"config": json.loads(config.to_json_best_effort()),
            "config_source": config_source or "", "format": FORMAT}


def _poison(state: ebm.EBMState) -> ebm.EBMState:
    """The state with NaN energy parameters (config.debug.nan_at_step)."""
    logging.warning("config.debug.nan_at_step: setting the energy parameters to NaN.")
    return state.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, state.params))


def _has_final_eval(workdir: str, step: int) -> bool:
    path = os.path.join(workdir, outputs.METRICS_FILE)
    return os.path.exists(path) and any(
        r["step"] == step and "mmd_ebm" in r for r in outputs.read_metrics(workdir))


def train_ebm(config: ml_collections.ConfigDict, workdir: str, *,
              config_source: Optional[str] = None,
              devices: Optional[Sequence[Any]] = None) -> ebm.EBMState:
    """Trains the energy-only EBM of `config` and evaluates it; resumes from `workdir`.

    Args:
      config: the full config with train.criterion = 'ebm' (configs/ebm.py documents its keys).
      workdir: output directory: checkpoints/, metrics.jsonl, TensorBoard events (if
        train.tensorboard), samples/, config.json. A workdir with checkpoints is resumed from
        its latest readable one.
      config_source: how the config was given, recorded in the checkpoint metadata.
      devices: devices to train on (default: all devices).
    Returns:
      the final EBMState, one copy (DataParallel.unreplicate).
    Raises:
      ConfigError: a bad config, or one that differs from the checkpoint's in
        validate.EBM_RESUME_KEYS (before anything is compiled).
      CheckpointError: the workdir cannot be used, or no checkpoint in it can be restored.
      WorkdirBusyError: another live run holds the workdir (named in the message).
      NonFiniteError: a logged metric or the state became non-finite (nothing non-finite is
        saved); the message names the step and the last good checkpoint.
      StorageError: a write to the workdir failed (e.g. a full disk); the message names what
        failed, the free space, the last complete checkpoint and how to resume.
    """
    if jax.process_count() == 1:  # a workdir in use stops us before anything slow is built
        workdir_lock.check_free(workdir)
    trainer = EBMTrainer(config, devices)
    validate_lib.workdir(workdir)
    evaluator = EBMEvaluator(config, trainer.spec, trainer.info, workdir,
                             write_pictures=jax.process_index() == 0)
    make_workdir(workdir)
    with workdir_lock.hold(workdir):  # before anything in the workdir is read or written
        return _train_ebm(config, workdir, trainer, evaluator, config_source)


def _train_ebm(config: ml_collections.ConfigDict, workdir: str, trainer: EBMTrainer,
               evaluator: EBMEvaluator, config_source: Optional[str]) -> ebm.EBMState:
    """train_ebm once the config is checked and the workdir locked."""
    num_steps = config.train.num_steps
    is_lead = jax.process_index() == 0
    metadata = _metadata(config, config_source)
    checkpoints = checkpoint_lib.Checkpoints(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.train.keep_checkpoints,
        metadata=metadata)
    try:
        latest = checkpoints.latest_step()
        if latest is None:
            logging.info("Starting a fresh EBM run in %s; %d steps on %d device(s) with %s.",
                         workdir, num_steps, trainer.parallel.num_devices, config.parallel)
            state = trainer.init_state()
        else:
            validate_lib.against_checkpoint(
                config, checkpoints.step_metadata(latest) or checkpoints.metadata(),
                directory=checkpoints.directory, keys=validate_lib.EBM_RESUME_KEYS)
            latest, restored, skipped = checkpoints.restore_newest_readable(
                trainer.abstract_state(), is_good=checkpoint_lib.all_finite)
            for bad, reason in skipped:
                logging.warning("Checkpoint step %d in %s is unreadable (%s); moved it to %s and "
                                "using step %d.", bad, checkpoints.directory, reason,
                                checkpoints.directory + checkpoint_lib.UNREADABLE_SUFFIX, latest)
            logging.info("Resuming the EBM run from step %d (checkpoint in %s).", latest,
                         checkpoints.directory)
            state = trainer.parallel.replicate(restored)
        step = int(trainer.parallel.local_copy(state).step)
    except BaseException:
        checkpoints.close()
        raise
    writer = None
    step_fn = trainer.step_fn()
    stop = _StopFlag()
    debug = config.get("debug") or {}
    nan_at_step = debug.get("nan_at_step", None)
    full_disk_at = debug.get("full_disk_at_step", None) or -1

    def diverged(what: str) -> NonFiniteError:
        checkpoints.wait()  # the last good checkpoint is the last committed one
        return NonFiniteError(
            f"{what}. Last good checkpoint: "
            f"{_describe(checkpoints.committed_step, checkpoints.directory)}; rerunning with "
            "this --workdir resumes from it (lower optim.energy.learning_rate or ebm.step_size, "
            "or raise ebm.alpha, or it may diverge again)")

    def check_finite(at: int, what: str) -> None:
        if not checkpoint_lib.all_finite(trainer.parallel.local_copy(state)):
            raise diverged(f"non-finite parameters or replay buffer at step {at}; {what}")

    def save(at: int) -> None:
        check_finite(at, "not saved")
        checkpoints.save(at, trainer.parallel.unreplicate(state), metadata=metadata)

    def evaluate_now(at: int) -> Dict[str, float]:
        check_finite(at, "not evaluated")
        started = time.monotonic()
        results = evaluator(trainer.parallel.local_copy(state), at)
        results["eval_seconds"] = time.monotonic() - started
        progress.pause(results["eval_seconds"])
        logging.info("eval at step %d: %s", at,
                     " ".join(f"{k}={v:.4g}" for k, v in results.items()))
        writer.write(at, results)
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
            writer.truncate_after(latest or 0)
            batches = data.train_batches(config.data, batch_size=config.train.batch_size,
                                         seed=config.seed, start_step=step,
                                         process_index=jax.process_index(),
                                         process_count=jax.process_count())
            progress = outputs.Progress(step, num_steps)
            stop.install()
            while step < num_steps:
                if step + 1 == nan_at_step:
                    state = _poison(state)
                state, step_metrics = step_fn(state, trainer.parallel.shard_batch(next(batches)))
                step += 1
                if full_disk_at > 0:  # debug: every write from step full_disk_at fails
                    storage.simulate_full_disk(step >= full_disk_at)
                checkpoints.poll()  # a save that failed in the background stops the run here
                if step % config.train.log_every == 0 or step == num_steps or stop.requested:
                    scalars = trainer.host_metrics(step_metrics)
                    bad = sorted(k for k, v in scalars.items() if not np.isfinite(v))
                    if bad:
                        raise diverged(f"non-finite {bad} at step {step}")
                    text, rate = progress.line(step, scalars)
                    logging.info(text)
                    scalars["steps_per_sec"] = rate
                    writer.write(step, scalars)
                if stop.requested:
                    break
                if step % config.train.eval_every == 0 or step == num_steps:
                    results = evaluate_now(step)
                if step % config.train.checkpoint_every == 0 or step == num_steps:
                    save(step)
            if stop.requested:
                save(step)
            elif results is None and not _has_final_eval(workdir, num_steps):
                results = evaluate_now(num_steps)
            checkpoints.wait()
            writer.close()
        committed = _describe(checkpoints.committed_step, checkpoints.directory)
        if stop.requested:
            logging.warning("Stopped by signal at step %d after saving a checkpoint; last "
                            "committed checkpoint: %s; rerun with the same workdir to resume.",
                            step, committed)
        else:
            logging.info("Final metrics: %s",
                         " ".join(f"{k}={v:.4g}" for k, v in (results or {}).items()))
            logging.info("Finished %d EBM steps; last committed checkpoint: %s.", num_steps,
                         committed)
    finally:
        stop.uninstall()
        close_quietly(checkpoints, writer)
    return trainer.parallel.unreplicate(state)
