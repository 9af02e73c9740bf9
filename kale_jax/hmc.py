"""Latent-space MCMC for GEBM posteriors: `sample`, the public front over kale_jax.mcmc.

Target: a density proportional to exp(-U(z)) over positions z of shape (chains, ...), given a
`potential_fn` mapping that batch to one potential per chain, shape (chains,). Chains are
independent: each has its own key, noise and accept/reject decisions, and `potential_fn` must not
couple them (no batch statistics). Kernels, by name (see kale_jax.mcmc and its modules):
'ula' and 'kla' (unadjusted overdamped and kinetic Langevin), 'mala' and 'hmc' (Metropolis-
adjusted, with optional dual-averaging warm-up), 'imh' (independent MH from the prior, no
gradients); more can be registered with `kale_jax.mcmc.register`.

A proposal whose potential or gradient is not finite is rejected and counted in
`num_nonfinite`, for every kernel, so NaN never enters a chain. Chain c's noise at step t depends
only on its key and t, so the chains of a `shard_map`/`pmap` call with per-chain keys (see
`chain_keys`) match a single-device call. Measurements behind the defaults are in
docs/performance.md.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from kale_jax import mcmc, xla_cpu
from kale_jax.mcmc import diagnostics, noise, run, step_size as step_size_lib
from kale_jax.mcmc.hmc import DEFAULT_NUM_LEAPFROG_STEPS  # noqa: F401 (public constant)
from kale_jax.mcmc.kla import DEFAULT_FRICTION  # noqa: F401 (public constant)

Array = jax.Array
PotentialFn = Callable[[Array], Array]
Schedule = step_size_lib.Schedule

KERNELS = mcmc.names()
ADAPTIVE_KERNELS = tuple(name for name in KERNELS if mcmc.get(name).step_size_adaptation)
# MALA's optimal rate in high dimension (Roberts & Rosenthal 1998), HMC's from Hoffman & Gelman.
DEFAULT_TARGET_ACCEPTANCE = {name: mcmc.get(name).target_acceptance for name in ADAPTIVE_KERNELS}
# Steps per scan iteration; unrolling measured no faster (docs/performance.md).
DEFAULT_UNROLL = 1

# Re-exported for existing callers.
chain_keys = noise.chain_keys
draw_noise = noise.draw_noise
decay_schedule = step_size_lib.decay_schedule
effective_sample_size = diagnostics.effective_sample_size
with_hwio_convolutions = xla_cpu.with_hwio_convolutions


class SampleResult(NamedTuple):
    """Output of `sample`.

    position:         (chains, ...) final positions (same shape and dtype as the input).
    potential:        (chains,) U at the final positions.
    acceptance_rate:  (chains,) fraction of the `num_steps` sampling steps whose proposal was
                      accepted (warm-up steps excluded). 1.0 for 'ula'/'kla' unless proposals
                      were non-finite.
    num_nonfinite:    (chains,) int32 number of rejected non-finite proposals, warm-up included.
    step_size:        (chains,) step size used at the last step (after adaptation and schedule);
                      None for kernels without a step size ('imh').
    trace:            (num_steps // thin, chains, ...) positions after every thin-th step, or None.
    trace_potential:  (num_steps // thin, chains) U at the traced positions, or None.
    trace_acceptance: (num_steps // thin, chains) fraction of accepted proposals in each block of
                      `thin` steps (per-step acceptance when thin=1), or None.
    """

    position: Array
    potential: Array
    acceptance_rate: Array
    num_nonfinite: Array
    step_size: Optional[Array]
    trace: Optional[Array] = None
    trace_potential: Optional[Array] = None
    trace_acceptance: Optional[Array] = None


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _is_concrete_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _validate_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}: got {value!r}, expected an int >= {minimum}.')


def _resolve_schedule(step_size_schedule, decay_factor, decay_every) -> Optional[Schedule]:
    """The step-size multiplier as a function of the sampling step, or None for constant."""
    if decay_factor is not None or decay_every is not None:
        if decay_factor is None or decay_every is None:
            raise ValueError(
                'decay_factor, decay_every: give both or neither, got '
                f'decay_factor={decay_factor!r}, decay_every={decay_every!r}.')
        _validate_int('decay_every', decay_every, 1)
        if _is_concrete_number(decay_factor) and not float(decay_factor) > 0.0:
            raise ValueError(f'decay_factor: got {decay_factor!r}, expected a number > 0.')
        if step_size_schedule not in (None, 'constant'):
            raise ValueError(
                'step_size_schedule: cannot combine a schedule with decay_factor/decay_every, got '
                f'step_size_schedule={step_size_schedule!r}.')
        return decay_schedule(decay_factor, decay_every)
    if step_size_schedule is None or step_size_schedule == 'constant':
        return None
    if callable(step_size_schedule):
        return step_size_schedule
    raise ValueError(
        f"step_size_schedule: got {step_size_schedule!r}, expected None, 'constant' or a "
        'callable step -> multiplier.')


def _initial_position(initial_position) -> Array:
    position = jnp.asarray(initial_position)
    if position.ndim < 1 or position.shape[0] < 1:
        raise ValueError(
            'initial_position: expected shape (chains, ...) with chains >= 1, got '
            f'{position.shape}.')
    if not jnp.issubdtype(position.dtype, jnp.floating):
        raise ValueError(f'initial_position: expected a float array, got dtype {position.dtype}.')
    return position


def _base_step(spec: mcmc.KernelSpec, kernel: str, step_size, position: Array) -> Array:
    """The (chains,) base step size (zeros for kernels without one)."""
    num_chains, dtype = position.shape[0], position.dtype
    if not spec.uses_step_size:
        return jnp.zeros((num_chains,), dtype)
    if step_size is None:
        raise ValueError(f'step_size: required for kernel {kernel!r}.')
    if _is_concrete_number(step_size) and not float(step_size) > 0.0:
        raise ValueError(f'step_size: got {step_size!r}, expected a number > 0.')
    base_step = jnp.asarray(step_size, dtype)
    if base_step.ndim == 0:
        return jnp.broadcast_to(base_step, (num_chains,))
    if base_step.shape != (num_chains,):
        raise ValueError(
            f'step_size: expected a scalar or one value per chain, shape ({num_chains},), '
            f'got shape {base_step.shape}.')
    return base_step


def _check_loop_options(spec: mcmc.KernelSpec, kernel: str, num_steps, num_adaptation_steps,
                        thin, unroll) -> None:
    _validate_int('num_steps', num_steps, 0)
    _validate_int('num_adaptation_steps', num_adaptation_steps, 0)
    _validate_int('thin', thin, 1, allow_none=True)
    if unroll is not True:
        _validate_int('unroll', unroll, 1)
    if num_adaptation_steps > 0 and not spec.step_size_adaptation:
        raise ValueError(
            f'num_adaptation_steps: got {num_adaptation_steps} for kernel {kernel!r}; step-size '
            'adaptation is only defined for '
            f'{tuple(k for k in mcmc.names() if mcmc.get(k).step_size_adaptation)}.')


def _target_acceptance(spec: mcmc.KernelSpec, target_acceptance) -> float:
    if target_acceptance is None:
        return spec.target_acceptance or 0.0
    if not 0.0 < float(target_acceptance) < 1.0:
        raise ValueError(f'target_acceptance: got {target_acceptance!r}, expected 0 < value < 1.')
    return target_acceptance


def _kernel_functions(spec: mcmc.KernelSpec, options: dict,
                      hwio_convolutions: Optional[bool]) -> tuple[Callable, Callable]:
    """(init, kernel) of `spec` with the options it takes and, for gradient kernels, the
    XLA:CPU gradient transform."""
    kwargs = {k: v for k, v in options.items() if k in spec.options and v is not None}
    if spec.uses_gradient:
        transform = dict(grad_transform=xla_cpu.gradient_transform(hwio_convolutions))
        return functools.partial(spec.init, **transform), spec.build_kernel(**kwargs, **transform)
    return spec.init, spec.build_kernel(**kwargs)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def sample(key: Array,
           potential_fn: PotentialFn,
           initial_position: Array,
           *,
           kernel: str,
           num_steps: int,
           step_size: Union[float, Array, None] = None,
           num_leapfrog_steps: Optional[int] = None,
           friction: Optional[float] = None,
           step_size_schedule: Union[None, str, Schedule] = None,
           decay_factor: Optional[float] = None,
           decay_every: Optional[int] = None,
           num_adaptation_steps: int = 0,
           target_acceptance: Optional[float] = None,
           axis_name: Optional[str] = None,
           thin: Optional[int] = None,
           unroll: Union[int, bool] = DEFAULT_UNROLL,
           hwio_convolutions: Optional[bool] = None) -> SampleResult:
    """Run `num_steps` MCMC steps of `kernel` on every chain (after an optional warm-up).

    Pure and jit-able (options are static except the values of `step_size`, `decay_factor` and
    `friction`); usable under `jax.vmap`, inside `lax.scan`, and under `shard_map`/`pmap` with
    chains split across devices (pass per-chain keys, see `chain_keys`).

    Args:
      key: a PRNG key (typed or raw uint32), or one key per chain (shape (chains,) typed or
        (chains, 2) raw). A single key is split with `chain_keys`.
      potential_fn: positions (chains, ...) -> potentials (chains,); must not couple chains.
      initial_position: (chains, ...) float array; the potential there must be finite.
      kernel: a registered kernel name (KERNELS, or one added with kale_jax.mcmc.register).
      num_steps: sampling steps (>= 0) after the warm-up.
      step_size: scalar or per-chain (chains,) base step size (Langevin time step for 'ula',
        'mala', 'kla'; leapfrog step for 'hmc'). Required except for 'imh', which ignores it.
      num_leapfrog_steps: 'hmc' only (default 10).
      friction: 'kla' only (default 1.0), in units of 1 / (time of a unit step size).
      step_size_schedule: None or 'constant' (multiplier 1), or a callable mapping the sampling
        step index (int32 scalar, 0 at the first step after warm-up) to a multiplier.
      decay_factor, decay_every: the authors' recipe, multiplier decay_factor ** (t // decay_every);
        exclusive with a callable schedule.
      num_adaptation_steps: warm-up steps of dual averaging (kernels in ADAPTIVE_KERNELS). One
        multiplier shared by all chains (scaling a per-chain base step size if given) is driven
        by the mean acceptance rate over chains, then frozen at its averaged value. The schedule
        does not act during warm-up; warm-up steps are not in `acceptance_rate` nor the trace.
      target_acceptance: in (0, 1); default DEFAULT_TARGET_ACCEPTANCE[kernel].
      axis_name: mapped axis (shard_map/pmap/vmap) over which the warm-up averages acceptance
        (otherwise each device adapts on its own chains).
      thin: record every `thin`-th position (and potential, block acceptance) in the trace.
      unroll: steps per scan iteration (int >= 1, or True for a fully unrolled loop).
      hwio_convolutions: see kale_jax.xla_cpu.with_hwio_convolutions; None: on CPU only.

    Returns:
      SampleResult (see its docstring).
    """
    spec = mcmc.get(kernel)
    _check_loop_options(spec, kernel, num_steps, num_adaptation_steps, thin, unroll)
    target_acceptance = _target_acceptance(spec, target_acceptance)
    schedule = _resolve_schedule(step_size_schedule, decay_factor, decay_every)
    position = _initial_position(initial_position)
    base_step = _base_step(spec, kernel, step_size, position)
    keys = noise.resolve_chain_keys(key, position.shape[0])
    init, step = _kernel_functions(
        spec, dict(num_leapfrog_steps=num_leapfrog_steps, friction=friction), hwio_convolutions)
    state = init(position, potential_fn, noise.step_key(keys, noise.INIT_STEP))

    frozen_step, num_nonfinite = base_step, None
    if num_adaptation_steps > 0:
        state, factor, num_nonfinite = run.warmup(
            step, state, potential_fn, keys, base_step, num_adaptation_steps,
            target_acceptance=target_acceptance, axis_name=axis_name, unroll=unroll)
        frozen_step = base_step * factor.astype(position.dtype)
    first = num_adaptation_steps

    def step_size_at(t):
        if schedule is None:
            return frozen_step
        return frozen_step * jnp.asarray(schedule(t - first), position.dtype)

    counts, trace = run.run(step, state, potential_fn, keys, step_size_at, num_steps,
                            first_step=first, thin=thin, unroll=unroll,
                            num_nonfinite=num_nonfinite)
    acceptance_rate = (counts.num_accepted / num_steps if num_steps > 0
                       else jnp.full(position.shape[:1], jnp.nan, position.dtype))
    final_step = None
    if spec.uses_step_size:
        final_step = step_size_at(jnp.asarray(first + max(num_steps, 1) - 1, jnp.int32))
    return SampleResult(
        position=counts.state.position,
        potential=counts.state.potential,
        acceptance_rate=acceptance_rate,
        num_nonfinite=counts.num_nonfinite,
        step_size=final_step,
        trace=None if trace is None else trace.position,
        trace_potential=None if trace is None else trace.potential,
        trace_acceptance=None if trace is None else trace.acceptance,
    )


# ----------------------------------------------------------------------------------------------
# Diagnostics of a SampleResult
# ----------------------------------------------------------------------------------------------


def _require_trace(result: SampleResult, field: str) -> Array:
    value = getattr(result, field)
    if value is None:
        raise ValueError(f'result.{field}: is None; call sample(..., thin=k) to record a trace.')
    return value


def potential_trace(result: SampleResult) -> Array:
    """Mean potential over chains at each traced step: (num_steps // thin,)."""
    return jnp.mean(_require_trace(result, 'trace_potential'), axis=1)


def acceptance_per_step(result: SampleResult) -> Array:
    """Fraction of chains' proposals accepted in each traced block: (num_steps // thin,).

    With thin=1 this is the acceptance of every step.
    """
    return jnp.mean(_require_trace(result, 'trace_acceptance'), axis=1)


# ----------------------------------------------------------------------------------------------
# A kernel driven with noise drawn by the caller (kept for existing callers)
# ----------------------------------------------------------------------------------------------


class StepInfo(NamedTuple):
    """What one step did, per chain (chains,): accepted, acceptance_probability (1 for finite
    unadjusted moves, 0 for non-finite proposals), nonfinite."""

    accepted: Array
    acceptance_probability: Array
    nonfinite: Array


class Kernel(NamedTuple):
    """A kernel as functions of pre-drawn noise (see `draw_noise`).

    init(position, normal) -> state: normal (chains, ...) is KLA's initial velocity (ignored by
      the other kernels).
    step(state, step_size, normal, uniform) -> (state, StepInfo): step_size (chains,); normal
      (chains, ...) standard normal; uniform (chains,) in (0, 1) (ignored by unadjusted kernels).
    """

    init: Callable[[Array, Any], Any]
    step: Callable[[Any, Array, Array, Array], tuple[Any, StepInfo]]


def build_kernel(kernel: str, potential_fn: PotentialFn, *,
                 num_leapfrog_steps: Optional[int] = None,
                 friction: Optional[float] = None,
                 hwio_convolutions: Optional[bool] = None) -> Kernel:
    """The kernel named `kernel` for `potential_fn`, driven by noise the caller draws.

    Args:
      kernel: a registered kernel name.
      potential_fn: (chains, ...) -> (chains,).
      num_leapfrog_steps: 'hmc' only (default 10); ignored otherwise.
      friction: 'kla' only (default 1.0); ignored otherwise.
      hwio_convolutions: see `sample`.

    Returns:
      Kernel(init, step); the states are those of the kale_jax.mcmc kernel module.
    """
    init, step = _kernel_functions(
        mcmc.get(kernel), dict(num_leapfrog_steps=num_leapfrog_steps, friction=friction),
        hwio_convolutions)

    def drawn_init(position, normal):
        return init(position, potential_fn, noise.Drawn(normal))

    def drawn_step(state, step_size, normal, uniform):
        state, info = step(noise.Drawn(normal, uniform), state, potential_fn, step_size)
        probability = getattr(info, 'acceptance_rate', None)
        if probability is None:
            probability = info.is_accepted.astype(state.position.dtype)
        return state, StepInfo(info.is_accepted, probability, info.is_nonfinite)

    return Kernel(drawn_init, drawn_step)
