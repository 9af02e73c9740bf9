"""GEBM sampling: the sampler settings (SamplerSpec, from_config), the one sampling path
(sample_gebm) and many samples in bounded memory (Sampler: chunks of chains, sharded over devices).

    spec = sampling.from_config(config.sampler)        # validated once, ConfigError naming the key
    z0, result = sampling.sample_gebm(key, model, spec, generator_variables, energy_variables,
                                      num_chains=64)   # jit-able; result: kale_jax.hmc.SampleResult

    sampler = sampling.Sampler(model, sampling.SamplerSpec(kernel="kla", num_steps=100,
                                                           step_size=0.01, record_every=10),
                               chunk_size=512)
    for chunk in sampler.chunks(key, generator_variables, energy_variables, num_samples=50_000):
        consume(chunk.samples[-1])        # (chunk, *data_shape) GEBM samples after 100 steps

A GEBM sample is B(z) for a latent z drawn by MCMC from nu(z) ∝ N(z; 0, I) exp(-beta E(B(z)))
(kale_jax.latent). Every chain starts at z_0 ~ N(0, I), so record 0 of a chain is a sample of the
base alone, B(z_0), and the later records B(z_k), B(z_2k), ... show the chain moving from the base
towards the GEBM. `num_samples` chains are run `chunk_size` at a time (one compiled program for
every chunk; the last chunk is padded and trimmed), each chunk split over all devices with
`jax.shard_map`, so memory is bounded by one chunk whatever `num_samples` is. The next chunk is
dispatched before the current one is copied to the host, so devices stay busy while the caller
consumes a chunk.

Randomness: chain c (global index, 0 <= c < num_samples) uses the key fold_in(key, c), from which
its start z_0 and its MCMC noise (kale_jax.hmc's per-chain streams) are drawn. Without step-size
adaptation a chain's path therefore depends only on (key, c), not on the chunk size or the number
of devices. With adaptation (`num_adaptation_steps` in `options`, 'mala'/'hmc') the step size is
adapted per chunk on all of the chunk's chains (averaged over devices), so it depends on the chunk.

Temperature: beta is an argument of the compiled program, not part of it, so
`chunks(..., beta=b)` runs any beta with one compilation. Chains keep their keys and starts
whatever beta is, so a sweep over betas is paired: record 0 (the base samples) is the same for
every beta and the differences between betas are not blurred by different chains.
`choose_beta` picks the best beta from per-beta validation values.

Presets (`PRESETS`): named sampler settings, as values of config.sampler: 'authors_kla' (the
authors' kinetic Langevin, mapped onto our 'kla'), 'authors_langevin' (the overdamped Langevin of
the authors' documented sampling command, mapped onto our 'ula') and 'adapted_mala' (ours).

Only input gradients are computed during MCMC (kale_jax.hmc); both networks run in inference mode.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kale_jax import checks, hmc, latent, mcmc
from kale_jax.errors import ConfigError

Array = jax.Array
AXIS_NAME = "chains"
# Stream of a chain's key that draws its start z_0 (the MCMC noise uses the key itself).
_START_STREAM = 0x5A5A
# Keys of config.sampler passed on to kale_jax.hmc.sample when not None (the kernel's default).
SAMPLER_OPTIONS = ("num_leapfrog_steps", "friction", "num_adaptation_steps", "target_acceptance",
                   "step_size_schedule", "decay_factor", "decay_every", "unroll")
# Options that only some kernels read; the adaptation options by mcmc.adaptive_names().
_KERNEL_ONLY_OPTIONS = {"num_leapfrog_steps": ("hmc",), "friction": ("kla",)}
_ADAPTATION_OPTIONS = ("num_adaptation_steps", "target_acceptance")

# Named sampler settings: values of config.sampler (experiments.sample --preset=NAME).
# 'authors_kla' and 'authors_langevin' map the authors' public code (MichaelArbel/GeneralizedEBM)
# exactly onto our kernels; the derivation, and what still differs, is in docs/math.md section 8.
# 'adapted_mala' is ours: MALA tuned by 100 steps of dual averaging to acceptance 0.574, then 900
# steps (1000 gradient evaluations, like the authors' 1000 steps), at beta = 1.
AUTHORS_LAMBDA = 1e-4
AUTHORS_KAPPA = 0.04
AUTHORS_DECAY_EVERY = 200
PRESETS: Dict[str, Dict[str, Any]] = {
    "authors_kla": dict(kernel="kla", step_size=2.0 * math.sqrt(AUTHORS_LAMBDA),
                        friction=AUTHORS_KAPPA, num_steps=1000, beta=100.0,
                        num_adaptation_steps=0, target_acceptance=None, num_leapfrog_steps=None,
                        decay_factor=math.sqrt(0.1), decay_every=AUTHORS_DECAY_EVERY),
    "authors_langevin": dict(kernel="ula", step_size=AUTHORS_LAMBDA / 2.0, friction=None,
                             num_steps=1000, beta=100.0, num_adaptation_steps=0,
                             target_acceptance=None, num_leapfrog_steps=None, decay_factor=0.1,
                             decay_every=AUTHORS_DECAY_EVERY),
    "adapted_mala": dict(kernel="mala", step_size=0.05, friction=None, num_steps=900, beta=1.0,
                         num_adaptation_steps=100, target_acceptance=0.574,
                         num_leapfrog_steps=None, decay_factor=None, decay_every=None),
}


def check_beta(beta: Any, name: str = "beta") -> float:
    """`beta` as a float; ConfigError (a ValueError) unless it is a finite number >= 0."""
    return checks.check_positive(beta, name, allow_zero=True)


def choose_beta(betas: Sequence[float], values: Sequence[Optional[float]],
                goal: str) -> Optional[int]:
    """Index of the best beta by a validation metric, or None when no value is finite.

    Args:
      betas: (B,) candidate inverse temperatures (only their count is used).
      values: (B,) the metric at each beta on validation data; None / NaN / inf are skipped.
      goal: 'min' or 'max', which direction is better.
    Returns:
      the index of the smallest ('min') or largest ('max') finite value; ties go to the first.
    """
    if goal not in ("min", "max"):
        raise ValueError(f"goal must be 'min' or 'max', got {goal!r}")
    if len(values) != len(betas):
        raise ValueError(f"values must hold one entry per beta ({len(betas)}), got {len(values)}")
    best = None
    for i, value in enumerate(values):
        if value is None or not math.isfinite(float(value)):
            continue
        if best is None or (value < values[best] if goal == "min" else value > values[best]):
            best = i
    return best


@dataclasses.dataclass(frozen=True)
class Model:
    """The static description of a GEBM: networks (Linen modules), latent size, energy floor.

    Attributes:
      generator: base network, latents (n, latent_dim) -> data (n, *data_shape); called with
        train=False.
      energy: energy network, data (n, *data_shape) -> (n,); called with train=False.
      latent_dim: d, latents z ~ N(0, I_d).
      energy_floor: None, or the soft floor the energy was trained with (kale.soft_floor).
    """
    generator: nn.Module
    energy: nn.Module
    latent_dim: int
    energy_floor: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """How chains are run (see kale_jax.hmc.sample for the kernels and options).

    Attributes:
      kernel: a registered kernel, kale_jax.mcmc.names() ('ula', 'mala', 'hmc', 'kla', 'imh', ...).
      num_steps: MCMC steps after any warm-up (>= 0); 0 gives base samples only.
      step_size: base step size (required except for 'imh').
      beta: inverse temperature on the energy, U(z) = |z|^2 / 2 + beta E(B(z)).
      record_every: record the chains every this many steps (must divide num_steps); None records
        only the start and the end.
      options: further keyword options of hmc.sample as sorted (name, value) pairs, e.g.
        (('friction', 1.0),) or (('num_adaptation_steps', 100),); see `with_options`.
    """
    kernel: str
    num_steps: int
    step_size: Optional[float] = None
    beta: float = 1.0
    record_every: Optional[int] = None
    options: Tuple[Tuple[str, Any], ...] = ()

    def with_options(self, **options: Any) -> "SamplerSpec":
        """A copy with hmc.sample options added (None values are dropped)."""
        merged = dict(self.options)
        merged.update({k: v for k, v in options.items() if v is not None})
        return dataclasses.replace(self, options=tuple(sorted(merged.items())))

    @property
    def record_steps(self) -> np.ndarray:
        """MCMC steps at which chains are recorded, (num_records,): 0, k, 2k, ..., num_steps."""
        every = self.record_every or self.num_steps
        if self.num_steps == 0:
            return np.zeros((1,), np.int64)
        return np.arange(0, self.num_steps + 1, every, dtype=np.int64)

    def with_kernel(self, kernel: str) -> "SamplerSpec":
        """A copy running `kernel`, without the options that kernel does not read."""
        options = {k: v for k, v in self.options
                   if kernel in _KERNEL_ONLY_OPTIONS.get(k, (kernel,))
                   and (k not in _ADAPTATION_OPTIONS or kernel in mcmc.adaptive_names())}
        return dataclasses.replace(self, kernel=kernel, options=tuple(sorted(options.items())))

    def validate(self, key: str = "sampler") -> None:
        """Raises ConfigError (a ValueError) naming `key`.<field> for a bad setting.

        Args:
          key: the prefix of the names in messages, e.g. "config.sampler".
        """
        checks.check_choice(self.kernel, f"{key}.kernel", mcmc.names())
        checks.check_int(self.num_steps, f"{key}.num_steps", minimum=0)
        checks.check_int(self.record_every, f"{key}.record_every", minimum=1, allow_none=True)
        if self.record_every is not None and self.num_steps % self.record_every:
            raise ConfigError(f"{key}.record_every={self.record_every} must divide num_steps="
                              f"{self.num_steps}; e.g. record_every="
                              f"{math.gcd(self.num_steps, self.record_every)}")
        if mcmc.get(self.kernel).uses_step_size:
            checks.check_positive(self.step_size, f"{key}.step_size",
                                  fix=f"kernel {self.kernel!r} needs a step size")
        checks.check_positive(self.beta, f"{key}.beta")
        options = dict(self.options)
        adaptation = checks.check_int(options.get("num_adaptation_steps", 0),
                                      f"{key}.num_adaptation_steps", minimum=0)
        if adaptation and self.kernel not in mcmc.adaptive_names():
            raise ConfigError(f"{key}.num_adaptation_steps={adaptation} needs {key}.kernel in "
                              f"{mcmc.adaptive_names()}, got {self.kernel!r}; set "
                              f"{key}.num_adaptation_steps=0")
        if options.get("target_acceptance") is not None:
            checks.check_probability(options["target_acceptance"], f"{key}.target_acceptance",
                                     include_zero=False, include_one=False)
        for name in ("num_leapfrog_steps", "unroll"):
            checks.check_int(options.get(name), f"{key}.{name}", minimum=1, allow_none=True)
        checks.check_positive(options.get("friction"), f"{key}.friction", allow_none=True)
        factor, every = options.get("decay_factor"), options.get("decay_every")
        if (factor is None) != (every is None):
            raise ConfigError(f"{key}.decay_factor={factor!r} and {key}.decay_every={every!r}: "
                              "give both (step size x decay_factor every decay_every steps) or "
                              "neither")
        checks.check_positive(factor, f"{key}.decay_factor", allow_none=True)
        checks.check_int(every, f"{key}.decay_every", minimum=1, allow_none=True)


def from_config(sampler_config: Mapping[str, Any], *, record_every: Optional[int] = None,
                key: str = "config.sampler") -> SamplerSpec:
    """The validated SamplerSpec of a config's sampler block (configs/default.py, `sampler`).

    Args:
      sampler_config: config.sampler: kernel, num_steps, step_size, beta and any of
        SAMPLER_OPTIONS (None: the kernel's default).
      record_every: record the chains every this many steps (None: start and end only).
      key: the prefix of the names in error messages.
    Returns:
      the SamplerSpec, validated.
    Raises:
      ConfigError: a missing or bad setting, named `key`.<name>.
    """
    for name in ("kernel", "num_steps", "beta"):
        if sampler_config.get(name) is None:
            raise ConfigError(f"{key}.{name} is missing; see configs/default.py")
    spec = SamplerSpec(kernel=sampler_config["kernel"], num_steps=sampler_config["num_steps"],
                       step_size=sampler_config.get("step_size"), beta=sampler_config["beta"],
                       record_every=record_every)
    spec = spec.with_options(**{k: sampler_config.get(k) for k in SAMPLER_OPTIONS})
    spec.validate(key)
    return dataclasses.replace(
        spec, beta=float(spec.beta),
        step_size=None if spec.step_size is None else float(spec.step_size))


class Chunk(NamedTuple):
    """One chunk of chains, on the host (numpy), records first.

    Attributes:
      start: global index of the chunk's first chain.
      steps: (R,) MCMC step of each record (SamplerSpec.record_steps); record 0 is the start.
      samples: (R, n, *data_shape) generator outputs B(z_t) at the recorded steps, or, when the
        sampler was built with record_samples=False, (2, n, *data_shape) at the start and the end.
        samples[0] are base samples, samples[-1] GEBM samples.
      energy: (R, n) E(B(z_t)) at the recorded steps (soft-floored like in training).
      acceptance: (R, n) fraction of accepted proposals in the block of steps ending at each
        record (NaN at record 0).
      num_nonfinite: (n,) rejected non-finite proposals per chain (warm-up included).
      step_size: (n,) step size of the last MCMC step (after any adaptation); NaN for 'imh' or
        num_steps = 0.
    """
    start: int
    steps: np.ndarray
    samples: np.ndarray
    energy: np.ndarray
    acceptance: np.ndarray
    num_nonfinite: np.ndarray
    step_size: Optional[np.ndarray] = None


class Sampler:
    """Compiled chunked sampling of one model with one sampler spec on a set of devices.

    Args:
      model: the GEBM's networks (Model).
      spec: the MCMC settings (SamplerSpec); validated here.
      chunk_size: chains per chunk, divisible by the number of devices. Memory scales with
        chunk_size * num_records * data size.
      devices: devices to shard each chunk over (default: all local devices).
      record_samples: keep generator outputs of every record (True) or of the start and end only.
    Raises:
      ValueError: bad spec, or chunk_size not a positive multiple of the device count.
    """

    def __init__(self, model: Model, spec: SamplerSpec, *, chunk_size: int,
                 devices: Optional[Sequence[Any]] = None, record_samples: bool = True):
        spec.validate()
        self.devices = tuple(jax.local_devices() if devices is None else devices)
        fix = f"use a multiple of the {len(self.devices)} device(s)"
        checks.check_int(chunk_size, "chunk_size", minimum=1, fix=fix)
        if chunk_size % len(self.devices):
            raise ConfigError(f"chunk_size={chunk_size} is not a multiple of the "
                              f"{len(self.devices)} device(s); {fix}")
        self.model, self.spec, self.chunk_size = model, spec, chunk_size
        self.record_samples = record_samples
        self._mesh = Mesh(np.array(self.devices), (AXIS_NAME,))
        # beta is an argument of the program: one compilation serves every beta.
        self._run = _compiled_chunk(model, dataclasses.replace(spec, beta=1.0), self.devices,
                                    record_samples)

    def chunks(self, key: Array, generator_variables: Mapping[str, Any],
               energy_variables: Mapping[str, Any], num_samples: int, *,
               beta: Optional[float] = None) -> Iterator[Chunk]:
        """Yields ceil(num_samples / chunk_size) Chunks covering chains 0 .. num_samples - 1.

        Args:
          key: a PRNG key (typed or raw uint32 (2,)); chain c uses fold_in(key, c).
          generator_variables, energy_variables: the networks' Linen variables (one copy).
          num_samples: total number of chains (>= 1).
          beta: inverse temperature (finite, >= 0) instead of spec.beta; no recompilation.
            The chains' keys and starts do not depend on it.
        """
        checks.check_int(num_samples, "num_samples", minimum=1)
        beta = check_beta(self.spec.beta if beta is None else beta)
        key_data = _key_data(key)
        replicated = NamedSharding(self._mesh, PartitionSpec())
        variables = jax.device_put((generator_variables, energy_variables), replicated)
        key_data = jax.device_put(key_data, replicated)
        beta = jax.device_put(np.float32(beta), replicated)
        sharded = NamedSharding(self._mesh, PartitionSpec(AXIS_NAME))
        starts = range(0, num_samples, self.chunk_size)

        def launch(start):
            index = jax.device_put(np.arange(start, start + self.chunk_size, dtype=np.int32),
                                   sharded)
            return self._run(key_data, index, beta, *variables)

        pending = launch(starts[0])
        for i, start in enumerate(starts):
            current = pending
            if i + 1 < len(starts):
                pending = launch(starts[i + 1])  # dispatched before the host waits on `current`
            out = jax.device_get(current)
            keep = min(self.chunk_size, num_samples - start)
            yield Chunk(start=start, steps=self.spec.record_steps,
                        samples=out["samples"][:, :keep], energy=out["energy"][:, :keep],
                        acceptance=out["acceptance"][:, :keep],
                        num_nonfinite=out["num_nonfinite"][:keep],
                        step_size=out["step_size"][:keep])

    def draw(self, key: Array, generator_variables: Mapping[str, Any],
             energy_variables: Mapping[str, Any], num_samples: int, *,
             beta: Optional[float] = None) -> Chunk:
        """All num_samples chains as one Chunk (concatenated chunks; for small num_samples)."""
        parts = list(self.chunks(key, generator_variables, energy_variables, num_samples,
                                 beta=beta))
        return Chunk(start=0, steps=self.spec.record_steps,
                     samples=np.concatenate([p.samples for p in parts], axis=1),
                     energy=np.concatenate([p.energy for p in parts], axis=1),
                     acceptance=np.concatenate([p.acceptance for p in parts], axis=1),
                     num_nonfinite=np.concatenate([p.num_nonfinite for p in parts]),
                     step_size=np.concatenate([p.step_size for p in parts]))


def _key_data(key: Array) -> np.ndarray:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    key = np.asarray(key)
    if key.shape != (2,) or key.dtype != np.uint32:
        raise ValueError(f"key must be a single PRNG key, got dtype {key.dtype} shape {key.shape}")
    return key


@functools.lru_cache(maxsize=None)
def _compiled_chunk(model: Model, spec: SamplerSpec, devices: tuple, record_samples: bool):
    """jit(shard_map(one chunk)), cached per (model, spec, devices); beta is an argument."""
    mesh = Mesh(np.array(devices), (AXIS_NAME,))
    chains = PartitionSpec(AXIS_NAME)
    records = PartitionSpec(None, AXIS_NAME)
    body = functools.partial(_chunk, model, spec, record_samples)
    mapped = jax.shard_map(
        body, mesh=mesh,
        in_specs=(PartitionSpec(), chains, PartitionSpec(), PartitionSpec(), PartitionSpec()),
        out_specs={"samples": records, "energy": records, "acceptance": records,
                   "num_nonfinite": chains, "step_size": chains},
        check_vma=False)
    return jax.jit(mapped)


def _is_single_key(key: Array) -> bool:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 0
    return key.ndim == 1


def initial_latents(key: Array, latent_dim: int, num_chains: Optional[int] = None) -> Array:
    """Chain starts z_0 ~ N(0, I_d), (n, latent_dim) float32.

    Args:
      key: one PRNG key (num_chains required), or (n,) per-chain keys (raw: (n, 2)); then chain
        i starts from fold_in(key[i], _START_STREAM), so its start depends on its own key alone.
      latent_dim: d.
      num_chains: n, with a single key.
    Returns:
      (n, latent_dim) float32 start latents.
    """
    if _is_single_key(key):
        if num_chains is None:
            raise ValueError("num_chains is required with a single key")
        return jax.random.normal(key, (num_chains, latent_dim), jnp.float32)
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, _START_STREAM),
                                                (latent_dim,), jnp.float32))(key)


def sample_gebm(key: Array, model: Model, spec: SamplerSpec,
                generator_variables: Mapping[str, Any], energy_variables: Mapping[str, Any], *,
                start_key: Optional[Array] = None, num_chains: Optional[int] = None,
                z0: Optional[Array] = None, beta: Optional[Any] = None,
                thin: Optional[int] = None, axis_name: Optional[str] = None):
    """GEBM latent chains: the posterior potential, the starts z_0 and `spec`'s MCMC run.

    The one sampling path of the library: training's evaluation, experiments.sample (through
    Sampler), the claims and the benchmark call it. Pure and jit-able; `spec` is static (validate
    it first, e.g. with from_config). Both networks run in inference mode (BatchNorm uses its
    running averages, although training applied the generator in train mode).

    Args:
      key: the MCMC noise: one PRNG key, or (n,) per-chain keys (kale_jax.hmc.sample).
      model: the GEBM's networks.
      spec: kernel, steps, step size, beta and options (SamplerSpec; record_every is not read).
      generator_variables, energy_variables: the networks' Linen variables.
      start_key: the key(s) of the starts (initial_latents). With neither start_key nor z0, a
        single `key` is split into (start_key, key), in this order.
      num_chains: n, when the starts are drawn from a single key.
      z0: (n, latent_dim) start latents instead of drawing them.
      beta: inverse temperature instead of spec.beta (may be traced).
      thin: record every thin-th step in result.trace (None: no trace).
      axis_name: the mapped axis of the chains (shard_map), for step-size adaptation.
    Returns:
      (z0 (n, latent_dim), kale_jax.hmc.SampleResult of the run).
    """
    if z0 is None:
        if start_key is None:
            start_key, key = jax.random.split(key)
        z0 = initial_latents(start_key, model.latent_dim, num_chains)
    potential = latent.potential(model.generator, model.energy, generator_variables,
                                 energy_variables, beta=spec.beta if beta is None else beta,
                                 energy_floor=model.energy_floor)
    options = dict(spec.options)
    if axis_name is not None and options.get("num_adaptation_steps"):
        options.setdefault("axis_name", axis_name)
    if thin is not None:
        options["thin"] = thin
    return z0, hmc.sample(key, potential, z0, kernel=spec.kernel, num_steps=spec.num_steps,
                          step_size=spec.step_size, **options)


def _chunk(model: Model, spec: SamplerSpec, record_samples: bool, key_data: Array,
           index: Array, beta: Array, generator_variables, energy_variables) -> dict:
    """One device's chains: index (n,) global chain indices, beta () -> records (see Chunk)."""
    root = jax.random.wrap_key_data(key_data)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(index)
    generate = latent.generator_fn(model.generator, generator_variables)
    energy = latent.energy_fn(model.energy, energy_variables, model.energy_floor)
    num_records = len(spec.record_steps)
    if spec.num_steps == 0:
        z0 = initial_latents(keys, model.latent_dim)
        positions = z0[None]
        acceptance = jnp.full((1, z0.shape[0]), jnp.nan, jnp.float32)
        nonfinite = jnp.zeros((z0.shape[0],), jnp.int32)
        step_size = jnp.full((z0.shape[0],), jnp.nan, jnp.float32)
    else:
        z0, result = sample_gebm(keys, model, spec, generator_variables, energy_variables,
                                 start_key=keys, beta=beta, axis_name=AXIS_NAME,
                                 thin=spec.record_every or spec.num_steps)
        positions = jnp.concatenate([z0[None], result.trace], axis=0)
        acceptance = jnp.concatenate(
            [jnp.full((1, z0.shape[0]), jnp.nan, jnp.float32),
             result.trace_acceptance.astype(jnp.float32)], axis=0)
        nonfinite = result.num_nonfinite
        step_size = (jnp.full((z0.shape[0],), jnp.nan, jnp.float32) if result.step_size is None
                     else jnp.broadcast_to(result.step_size, (z0.shape[0],)).astype(jnp.float32))
    assert positions.shape[0] == num_records
    if record_samples:
        samples = jax.lax.map(generate, positions)  # one record at a time: bounded memory
        energies = jax.lax.map(energy, samples)
    else:
        energies = jax.lax.map(lambda z: energy(generate(z)), positions)
        samples = jax.lax.map(generate, positions[jnp.array([0, num_records - 1])])
    return {"samples": samples, "energy": energies, "acceptance": acceptance,
            "num_nonfinite": nonfinite, "step_size": step_size}
