"""A trained GEBM in one call: `kale_jax.load(workdir)` (this module's `load`).

    gebm = kale_jax.load("workdirs/ring")                 # latest committed checkpoint
    x = gebm.sample(jax.random.key(0), 1000)             # (1000, *data_shape) GEBM samples
    gebm.energy(x), gebm.base(z), gebm.log_partition     # E(x) (n,), B(z) (n, *data_shape), A

What is loaded: the config from WORKDIR/config.json (the training run's full config, overrides
included), the networks it describes (kale_jax.train.models.build) and their variables from a
committed checkpoint in WORKDIR/checkpoints. Checkpoints are opened read-only, so loading beside a
run that is still training is safe: nothing in the workdir is written, and a save in progress is
neither read nor disturbed.

The model is Q(dx) ∝ exp(-E(x)) G(dx), G the pushforward of N(0, I_d) by the base B
(docs/math.md). `sample` draws latents from nu(z) ∝ N(z; 0, I) exp(-beta E(B(z))) by MCMC
(kale_jax.sampling.Sampler over kale_jax.hmc) and returns B(z); beta = 1 is the model itself.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kale_jax import kale, latent, sampling
from kale_jax.errors import CheckpointError, UserError

Array = jax.Array
CONFIG_FILE = "config.json"
DEFAULT_CHUNK_SIZE = 512  # chains per compiled chunk when the config has no sample.chunk_size
# Options of config.sampler handed to kale_jax.hmc.sample (as experiments.sample does).
SAMPLER_OPTIONS = ("num_leapfrog_steps", "friction", "num_adaptation_steps", "target_acceptance",
                   "step_size_schedule", "decay_factor", "decay_every", "unroll")


@dataclasses.dataclass(frozen=True, eq=False)
class GEBM:
    """A trained GEBM: config, networks, variables and the functions of the model.

    Attributes:
      config: the training run's config (ml_collections.ConfigDict, from WORKDIR/config.json).
      model: the networks (kale_jax.sampling.Model: generator, energy Linen modules, latent_dim,
        energy_floor), as kale_jax.sampling.Sampler takes them.
      generator_variables, energy_variables: the networks' Linen variables ({'params': ...,
        'batch_stats': ...}) restored from the checkpoint.
      log_partition: A, the scalar (nats) trained with the energy. At the KALE optimum
        A = log E_{y~G}[exp(-E(y))] = log Z, so exp(-(E(x) + A)) estimates the density dQ/dG(x);
        it is the model's own estimate, not recomputed here (see `estimate_log_partition`).
      step: the checkpoint's base step.
      workdir: the training workdir (absolute path).
      data_shape: shape of one example, e.g. (2,) or (32, 32, 3).
    """
    config: ml_collections.ConfigDict
    model: sampling.Model
    generator_variables: Mapping[str, Any]
    energy_variables: Mapping[str, Any]
    log_partition: float
    step: int
    workdir: str
    data_shape: tuple

    @property
    def latent_dim(self) -> int:
        """d: latents are z ~ N(0, I_d)."""
        return self.model.latent_dim

    @property
    def generator(self):
        """The base network (Linen module): latents (n, d) -> data (n, *data_shape)."""
        return self.model.generator

    @property
    def energy_network(self):
        """The energy network (Linen module): data (n, *data_shape) -> (n,)."""
        return self.model.energy

    def energy(self, x: Any) -> Array:
        """E(x) in inference mode, soft-floored as in training (config.model.energy_floor).

        Args:
          x: (n, *data_shape) examples in the data's units (images in [-1, 1]).
        Returns:
          (n,) float32 energies; the GEBM's density relative to the base is exp(-E(x)) / Z.
        """
        x = _batch(x, self.data_shape, "x")
        return _apply_energy(self.model.energy, self.model.energy_floor, self.energy_variables, x)

    def base(self, z: Any) -> Array:
        """B(z) in inference mode (BatchNorm running averages).

        Args:
          z: (n, latent_dim) latents.
        Returns:
          (n, *data_shape) float32 base samples when z ~ N(0, I).
        """
        z = _batch(z, (self.latent_dim,), "z")
        return _apply_generator(self.model.generator, self.generator_variables, z)

    def potential(self, beta: float = 1.0) -> Callable[[Array], Array]:
        """U(z) = |z|^2 / 2 + beta E(B(z)), latents (chains, d) -> (chains,), for kale_jax.hmc."""
        return latent.potential(self.model.generator, self.model.energy,
                                self.generator_variables, self.energy_variables, beta=beta,
                                energy_floor=self.model.energy_floor)

    def estimate_log_partition(self, key: Array, num_samples: int = 10_000) -> float:
        """Monte-Carlo log E_{z~N(0,I)}[exp(-E(B(z)))] over num_samples base samples (nats)."""
        z = jax.random.normal(key, (num_samples, self.latent_dim), jnp.float32)
        return float(kale.log_partition(self.energy(self.base(z))))

    def sample(self, key: Array, num_samples: int, *, kernel: Optional[str] = None,
               num_steps: Optional[int] = None, step_size: Optional[float] = None,
               beta: Optional[float] = None, chunk_size: Optional[int] = None,
               **options: Any) -> np.ndarray:
        """GEBM samples B(z_T): latent MCMC chains from z_0 ~ N(0, I), sharded over devices.

        Defaults are the run's config.sampler (kernel, num_steps, step_size, beta and its
        options such as friction or num_adaptation_steps; the options apply only when `kernel`
        is the config's). Chain c uses the key fold_in(key, c): the same key gives the same
        samples, whatever the chunk size or device count (without step-size adaptation).

        Args:
          key: a PRNG key (jax.random.key or PRNGKey).
          num_samples: number of chains, each giving one sample (>= 1).
          kernel: 'ula', 'mala', 'hmc', 'kla' or 'imh' (kale_jax.hmc.KERNELS).
          num_steps: MCMC steps after any warm-up (0 gives base samples B(z_0)).
          step_size: the kernel's step size (ignored by 'imh').
          beta: inverse temperature: target nu(z) ∝ N(z; 0, I) exp(-beta E(B(z))); 1 is the
            model itself, larger is colder.
          chunk_size: chains per compiled chunk (memory bound); default config.sample.chunk_size,
            rounded up to a multiple of the local device count.
          **options: further keyword options of kale_jax.hmc.sample (e.g. friction=0.1,
            num_adaptation_steps=100), over the config's.
        Returns:
          (num_samples, *data_shape) float32 numpy array.
        Raises:
          ValueError: a bad kernel, step count, step size, beta or option.
        """
        spec = self.sampler_spec(kernel=kernel, num_steps=num_steps, step_size=step_size,
                                 beta=beta, **options)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        devices = jax.local_devices()
        if chunk_size is None:
            chunk_size = min(int(self.config.get("sample", {}).get("chunk_size", None)
                                 or DEFAULT_CHUNK_SIZE), num_samples)
            chunk_size = -(-chunk_size // len(devices)) * len(devices)
        sampler = sampling.Sampler(self.model, spec, chunk_size=chunk_size, devices=devices,
                                   record_samples=False)
        chunk = sampler.draw(key, self.generator_variables, self.energy_variables, num_samples)
        return chunk.samples[-1]

    def sampler_spec(self, *, kernel: Optional[str] = None, num_steps: Optional[int] = None,
                     step_size: Optional[float] = None, beta: Optional[float] = None,
                     **options: Any) -> sampling.SamplerSpec:
        """The kale_jax.sampling.SamplerSpec `sample` runs (arguments as there); validated."""
        settings = self.config.sampler
        same_kernel = kernel is None or kernel == settings.kernel
        merged = {k: settings.get(k, None) for k in SAMPLER_OPTIONS} if same_kernel else {}
        merged.update(options)
        step_size = settings.get("step_size", None) if step_size is None else step_size
        spec = sampling.SamplerSpec(
            kernel=settings.kernel if kernel is None else kernel,
            num_steps=settings.num_steps if num_steps is None else num_steps,
            step_size=None if step_size is None else float(step_size),
            beta=float(settings.get("beta", 1.0) if beta is None else beta))
        spec = spec.with_options(**merged)
        spec.validate()
        return spec


def load(workdir: str, step: Optional[int] = None) -> GEBM:
    """Loads the GEBM trained in `workdir` (read-only).

    Args:
      workdir: a training run's directory (holding config.json and checkpoints/).
      step: the checkpoint's base step; None for the latest committed one.
    Returns:
      a GEBM.
    Raises:
      CheckpointError (a kale_jax.errors.UserError): no such workdir, no config.json, no
        committed checkpoint, no checkpoint at `step`, an energy-only EBM run, or a checkpoint
        that does not match the config; one line naming the path and the fix.
    """
    workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    config = read_config(workdir)
    if config.get("train", {}).get("criterion", None) == "ebm":
        raise CheckpointError(f"{workdir} holds an energy-only EBM (config.train.criterion="
                              "'ebm'), which has no base to sample through; kale_jax.load loads "
                              "GEBMs (the EBM's energy is in its checkpoint, see "
                              "kale_jax.train.ebm_loop)")
    state, step, trainer = restore(config, workdir, step)
    floor = config.model.get("energy_floor", None)
    model = sampling.Model(trainer.spec.generator, trainer.spec.energy,
                           latent_dim=trainer.spec.latent_dim,
                           energy_floor=None if floor is None else float(floor))
    return GEBM(config=config, model=model,
                generator_variables=state.generator_variables(),
                energy_variables=state.energy_variables(),
                log_partition=float(state.log_partition), step=int(step), workdir=workdir,
                data_shape=tuple(trainer.info.shape))


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The training config saved in WORKDIR/config.json, as a ConfigDict (JSON lists as tuples).

    Raises:
      CheckpointError: the workdir or its config.json is missing or not a JSON config.
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"no workdir {workdir}: pass the --workdir of a training run "
                              "(python -m experiments.train --config=... --workdir=DIR)")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is missing: the workdir holds no training run's config "
                              "(experiments.train writes it when a run starts); pass the "
                              "--workdir of a training run")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read as JSON ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise CheckpointError(f"{path} is not a kale_jax training config (no 'model' section)")
    return ml_collections.ConfigDict(_tuples(raw))


def restore(config: ml_collections.ConfigDict, workdir: str, step: Optional[int] = None, *,
            config_source: Optional[str] = None):
    """(TrainState, step, Trainer) from a committed checkpoint of WORKDIR/checkpoints, read-only.

    The state is restored onto the first local device. Reads only, so it can run beside the
    training run writing the workdir: nothing in checkpoints/ is created or deleted, only
    committed steps are listed, and a latest step that the training run deletes
    (train.keep_checkpoints) while it is being read is replaced by the new latest.

    Args:
      config: the run's config (networks, data) to restore with.
      workdir: the training run's workdir.
      step: the checkpoint step; None for the latest committed one.
      config_source: where `config` came from, named in a mismatch error (default
        WORKDIR/config.json).

    Raises:
      CheckpointError: no committed checkpoint, `step` not saved, or a checkpoint that does not
        match `config` (data, image size, networks).
    """
    from kale_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    from kale_jax.train import loop, validate  # pylint: disable=g-import-not-at-top
    directory = os.path.join(workdir, loop.CHECKPOINT_DIR)
    fix = f"train first: python -m experiments.train --config=... --workdir={workdir}"
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoints in {directory}; {fix}")
    trainer = None
    for attempt in range(3):
        checkpoints = checkpoint_lib.Checkpoints(directory, read_only=True)
        try:
            steps = checkpoints.all_steps()
            if not steps:
                raise CheckpointError(f"no committed checkpoint in {directory} (a save may be "
                                      f"in progress: wait for 'Saved checkpoint'); {fix}")
            wanted = steps[-1] if step is None else step
            if wanted not in steps:
                raise CheckpointError(f"step={step!r} is not a committed checkpoint in "
                                      f"{directory} (saved steps: {list(steps)})")
            try:
                validate.against_checkpoint(config, checkpoints.step_metadata(wanted),
                                            directory=directory, keys=validate.SAMPLE_KEYS)
                if trainer is None:
                    trainer = loop.Trainer(config, devices=jax.local_devices()[:1])
                state = checkpoints.restore(wanted, target=trainer.abstract_state())
            except UserError as error:
                source = config_source or os.path.join(workdir, CONFIG_FILE)
                raise CheckpointError(f"{source}: {error}") from None
            except Exception as error:  # pylint: disable=broad-except
                # orbax raises many types for a damaged or mismatched tree.
                if (step is None and attempt < 2
                        and not os.path.isdir(os.path.join(directory, str(wanted)))):
                    continue  # deleted by the training run meanwhile: read the new latest
                raise CheckpointError(
                    f"cannot restore step {wanted} from {directory} with its config "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
        finally:
            checkpoints.close()
        return state, wanted, trainer
    raise CheckpointError(f"the latest checkpoint in {directory} kept being deleted while it "
                          "was read; retry, or pass step=")


def _tuples(value: Any) -> Any:
    """JSON lists as tuples (configs hold tuples; config.to_json_best_effort writes lists)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _batch(value: Any, shape: tuple, name: str) -> Array:
    array = jnp.asarray(value, jnp.float32)
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, shape))}), got "
                         f"{tuple(array.shape)}")
    return array


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply_energy(module, floor, variables, x):
    return latent.energy_fn(module, variables, floor)(x)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply_generator(module, variables, z):
    return latent.generator_fn(module, variables)(z)
