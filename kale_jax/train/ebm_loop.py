"""train_ebm: the run of the energy-only EBM baseline (config.train.criterion = 'ebm').

    python -m experiments.train --config=configs/ebm.py --workdir=workdirs/ebm_ring

The model and its step are kale_jax.ebm (maximum likelihood with replay-buffer Langevin in data
space); this module is its trainer and evaluator, run by the skeleton the GEBM run uses
(run_loop.run): config validation before anything is compiled, data-parallel steps over all devices
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
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kale_jax import data, ebm, metrics
from kale_jax.errors import ConfigError
from kale_jax.train import models, optim, outputs, parallel, run_loop
from kale_jax.train import validate as validate_lib


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

    def run_iteration(self, state: ebm.EBMState, step: int, batches) -> tuple:
        """One EBM update on the next data batch.

        Args:
          state: replicated state whose step is `step` (donated).
          step: the coming step (unused: every step is the same update).
          batches: iterator of this host's data batches.
        Returns:
          (new replicated state, metrics in the device layout).
        """
        del step
        return self.step_fn()(state, self.parallel.shard_batch(next(batches)))

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
        self.bandwidths = metrics.reference_bandwidths(self.reference)
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
            self._pictures(step, samples, result)
        return result

    def _pictures(self, step: int, samples: Dict[str, np.ndarray],
                  result: Dict[str, float]) -> None:
        if self.info.kind == "image":
            shown = min(64, samples["ebm"].shape[0])
            outputs.save_image_grid(os.path.join(self.samples_dir, f"ebm_{step:07d}.png"),
                                    samples["ebm"][:shown])
        elif self.info.shape in ((2,), (3,)):
            ebm_name = f"EBM ({self.config.ebm.eval_steps} Langevin steps)"
            outputs.save_scatter(
                os.path.join(self.samples_dir, f"scatter_{step:07d}.png"),
                {"data (held out)": self.reference, ebm_name: samples["ebm"],
                 "EBM replay buffer": samples["ebm_buffer"]},
                title=f"{self.info.name}, EBM step {step}",
                notes={ebm_name: outputs.mmd_note(result["mmd_ebm"]),
                       "EBM replay buffer": outputs.mmd_note(result["mmd_ebm_buffer"])})


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


def _start(config: ml_collections.ConfigDict, one: ebm.EBMState) -> Tuple[int, int]:
    """(step reached, data batch to start from) of a state: step t trains on batch t."""
    del config
    step = int(one.step)
    return step, step


def _poison(state: ebm.EBMState) -> ebm.EBMState:
    """The state with NaN energy parameters (config.debug.nan_at_step)."""
    logging.warning("config.debug.nan_at_step: setting the energy parameters to NaN.")
    return state.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, state.params))


_RUN = run_loop.RunSpec(
    format=FORMAT, start=_start, poison=_poison, final_eval_key="mmd_ebm",
    resume_keys=validate_lib.EBM_RESUME_KEYS,
    fresh_line="Starting a fresh EBM run in %(workdir)s; %(num_steps)d steps on %(devices)d "
               "device(s) with %(parallel)s.",
    resume_line="Resuming the EBM run from step %(step)d (checkpoint in %(directory)s).",
    step_word="step", steps_done="EBM steps", checked="parameters or replay buffer",
    diverge_hint="lower optim.energy.learning_rate or ebm.step_size, or raise ebm.alpha")


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
    return run_loop.run(
        config, workdir, _RUN, lambda: EBMTrainer(config, devices),
        lambda trainer: EBMEvaluator(config, trainer.spec, trainer.info, workdir,
                                     write_pictures=jax.process_index() == 0),
        config_source=config_source)
