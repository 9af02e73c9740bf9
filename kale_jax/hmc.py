"""Latent-space MCMC for GEBM posteriors: kernels, step-size control, `sample`, diagnostics.

Target: a density proportional to exp(-U(z)) over positions z of shape (chains, ...), given a
`potential_fn` mapping that batch to one potential per chain, shape (chains,). Chains are
independent copies: every kernel draws its own noise and makes its own accept/reject decision
per chain.

Kernels (per chain; s = step size, xi ~ N(0, I)):

* 'ula'  overdamped Langevin, z' = z - s grad U(z) + sqrt(2 s) xi. Unadjusted (biased for s > 0).
* 'mala' the ULA proposal plus a Metropolis-Hastings test with the proposal density
         log q(a | b) = -|a - b + s grad U(b)|^2 / (4 s).
* 'hmc'  momentum p ~ N(0, I), `num_leapfrog_steps` leapfrog steps of size s, accepted with
         probability min(1, exp(H_old - H_new)), H = U + |p|^2 / 2.
* 'kla'  kinetic (underdamped) Langevin with friction gamma, unadjusted, BAOAB splitting:
             B: v <- v - (s/2) grad U(z)          (cached gradient of the current point)
             A: z <- z + (s/2) v
             O: v <- exp(-gamma s) v + sqrt(1 - exp(-2 gamma s)) xi
             A: z <- z + (s/2) v
             B: v <- v - (s/2) grad U(z)          (new gradient, cached for the next step)
         One gradient evaluation per step. For a Gaussian target BAOAB's stationary position
         marginal is exact for any stable s (s w < 2 for curvature w^2; Leimkuhler & Matthews
         2013), and its velocity variance is 1 - s^2 w^2 / 4. The velocity lives in the state and is
         drawn from N(0, I) at the start.
* 'imh'  independent Metropolis-Hastings with proposals from the prior z' ~ N(0, I). The proposal
         density is part of the ratio: log alpha = [U(z) - |z|^2/2] - [U(z') - |z'|^2/2]. This is
         efficient only when U = |z|^2 / 2 + (something modest), as for the GEBM latent
         posterior U = |z|^2 / 2 + beta E(B(z)); it is correct for any U. No gradients, and the
         step size is ignored.

Gradients: one `jax.value_and_grad` of `sum(potential_fn(z))` gives every chain's gradient at once
because chains do not interact. `potential_fn` must therefore not couple chains (no train-mode
BatchNorm, no batch statistics): the gradient of chain i would otherwise pick up terms from the
others. The potential and gradient of the current point are cached in the state, so every kernel
evaluates the network once (forward + input backward) per proposal; after a rejection the state
keeps the old point together with the old point's own potential and gradient.

Non-finite proposals: a proposal whose potential or gradient (or, for HMC, final momentum) is not
finite is rejected and counted in `num_nonfinite`, for every kernel including the unadjusted ones,
so NaN never enters a chain. The MH test is `log u < log alpha` with NaN compared as False.
Initial positions must have a finite potential and gradient.

Randomness: every chain has its own key (from `chain_keys(key, num_chains)` or passed in), and the
noise of step t for chain c is stream t of that key (`draw_noise`: one normal array and one
uniform per chain and step). A chain's path therefore depends only on its own key and start, not
on how many chains there are or how they are split over devices: run under `shard_map`/`pmap`
with per-chain keys sharded like the positions and the samples match a single-device call.
Kernels are deterministic functions of pre-drawn noise (`Kernel.step(state, step_size, normal,
uniform)`), so a caller can drive them in its own loop.

Performance on CPU: XLA:CPU runs a convolution's input-gradient on a slow path inside loops
unless its kernel is laid out HWIO; `with_hwio_convolutions` (on by default on the CPU backend)
rewrites the traced gradient accordingly. Only input gradients are computed (the network's
weights are closed over, never differentiated). XLA:CPU's default convolutions are slow on
2-core machines; XLA_FLAGS=--xla_cpu_use_xnnpack=true (set before jax starts; the benchmark
binary does) made a ULA step on the SNGAN pair 1.7x faster (2.6 s -> 1.55 s at batch 64).

Step-size control: a base step size (scalar or per chain) times an optional schedule multiplier
(constant, a callable of the step, or the authors' recipe "multiply by `decay_factor` every
`decay_every` steps"), and for 'mala'/'hmc' optional dual averaging (Hoffman & Gelman 2014) during
a warm-up of `num_adaptation_steps`, after which the step size is frozen at the averaged value.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as _jcore
from jax.extend.core import primitives as _prims

Array = jax.Array
PotentialFn = Callable[[Array], Array]
Schedule = Callable[[Array], Array]

KERNELS = ('ula', 'mala', 'hmc', 'kla', 'imh')
ADAPTIVE_KERNELS = ('mala', 'hmc')
# Acceptance targets for dual averaging: MALA's optimal rate in high dimension (Roberts & Rosenthal
# 1998) and the HMC value recommended by Hoffman & Gelman (2014).
DEFAULT_TARGET_ACCEPTANCE = {'mala': 0.574, 'hmc': 0.65}
DEFAULT_NUM_LEAPFROG_STEPS = 10
DEFAULT_FRICTION = 1.0

# Steps per iteration of the sampling loop (`lax.scan(..., unroll=...)`). Measured with
# `python -m experiments.benchmark --section=sampler --net=sngan --kernels=ula
# --unroll_sweep=2,4,1,2,4 --repeats=3 --num_steps=4` (SNGAN pair, 32x32, batch 64, latent 100,
# chains split over 2 CPU devices, median of 3) on an otherwise idle 2-core CPU machine,
# 2026-11-29: unroll=1 681 and 632 ms/step, unroll=2 645 and 667, unroll=4 (= fully unrolled)
# 674 and 626; compile 5.0-6.1 s for all. The differences are inside the run-to-run noise (the
# machine's own matmul rate varied 78-165 GFLOP/s over the same hour), so the default is 1, the
# smallest program. (The large loop penalty noted in DESIGN.md section 5 came from convolution
# kernel layouts inside loops, fixed by `with_hwio_convolutions`: without it the ULA step took
# 1056 ms against 650 ms with it in the same run.)
DEFAULT_UNROLL = 1

# Noise stream of `init` (KLA's initial velocity); steps use streams 0, 1, ...
_INIT_STREAM = np.uint32(2**32 - 1)

# Hoffman & Gelman (2014), section 3.2.1.
DUAL_AVERAGING_GAMMA = 0.05
DUAL_AVERAGING_T0 = 10.0
DUAL_AVERAGING_KAPPA = 0.75
# The adapted log multiplier is clipped to +-_MAX_LOG_STEP_FACTOR so a long run of acceptances
# cannot overflow the step size to inf (which would only produce rejected NaN proposals).
_MAX_LOG_STEP_FACTOR = 30.0


# ----------------------------------------------------------------------------------------------
# States and per-step information
# ----------------------------------------------------------------------------------------------


class State(NamedTuple):
    """Per-chain state of a kernel.

    position:  (chains, ...) current point.
    potential: (chains,) U(position).
    grad:      (chains, ...) grad U(position), or None for 'imh' (no gradient needed).
    velocity:  (chains, ...) for 'kla', else None.
    """

    position: Array
    potential: Array
    grad: Optional[Array]
    velocity: Optional[Array] = None


class StepInfo(NamedTuple):
    """What one step did, per chain (all shape (chains,)).

    accepted:   the proposal was taken (True for finite unadjusted moves).
    acceptance_probability: min(1, exp(log alpha)); 1 for finite unadjusted moves, 0 for
                non-finite proposals. This is what dual averaging adapts on.
    nonfinite:  the proposal had a non-finite potential, gradient or momentum and was rejected.
    """

    accepted: Array
    acceptance_probability: Array
    nonfinite: Array


class Kernel(NamedTuple):
    """A kernel as pure, deterministic functions of pre-drawn noise (see `draw_noise`).

    init(position, normal) -> State: normal (chains, ...) standard normal, used by 'kla' as the
        initial velocity and ignored by the others.
    step(state, step_size, normal, uniform) -> (State, StepInfo): step_size (chains,);
        normal (chains, ...) standard normal (Langevin noise, momentum, or IMH proposal);
        uniform (chains,) in (0, 1) for the MH test (ignored by unadjusted kernels).
    """

    init: Callable[[Array, Array], State]
    step: Callable[[State, Array, Array, Array], tuple[State, StepInfo]]


class SampleResult(NamedTuple):
    """Output of `sample`.

    position:         (chains, ...) final positions (same shape and dtype as the input).
    potential:        (chains,) U at the final positions.
    acceptance_rate:  (chains,) fraction of the `num_steps` sampling steps whose proposal was
                      accepted (warm-up steps excluded). 1.0 for 'ula'/'kla' unless proposals
                      were non-finite.
    num_nonfinite:    (chains,) int32 number of rejected non-finite proposals, warm-up included.
    step_size:        (chains,) step size used at the last step (after adaptation and schedule);
                      None for 'imh'.
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
# Small helpers
# ----------------------------------------------------------------------------------------------


def _sum_event(x: Array) -> Array:
    """Sum over every axis but the leading chain axis: (chains, ...) -> (chains,)."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _per_chain(values: Array, like: Array) -> Array:
    """Reshape (chains,) to (chains, 1, ..., 1) so it broadcasts against `like` (chains, ...)."""
    return jnp.reshape(values, values.shape + (1,) * (like.ndim - 1))


def _select(accept: Array, new: Any, old: Any) -> Any:
    """Per-chain choice between two pytrees of (chains, ...) arrays."""
    return jax.tree.map(lambda n, o: jnp.where(_per_chain(accept, n), n, o), new, old)


def _all_finite(x: Array) -> Array:
    return jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))


def _is_threefry(keys: Array) -> bool:
    return str(jax.random.key_impl(keys)) == 'threefry2x32'


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: Array, r: int) -> Array:
    return lax.shift_left(x, np.uint32(r)) | lax.shift_right_logical(x, np.uint32(32 - r))


def threefry2x32(key_data: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011) in plain jnp ops.

    Same function as `jax.extend.random.threefry_2x32` (and so as jax's threefry keys), written
    out because jax's CPU lowering of it takes ~1.5 s of LLVM time to compile on our 2-core
    machines, against ~0.2 s for these element-wise ops, and most of a small sampler's compile
    time was that. (As a side effect it keeps shard_map's device-varying types, which jax 0.10's
    primitive drops.)

    Args:
      key_data: (..., 2) uint32 key words; x0, x1: uint32 counter words, broadcast against
        key_data[..., 0].
    Returns:
      The two uint32 output words, broadcast shape.
    """
    k0, k1 = key_data[..., 0], key_data[..., 1]
    schedule = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0 = x0 + k0
    x1 = x1 + k1
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + schedule[(i + 1) % 3]
        x1 = x1 + schedule[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _unit_float32(bits: Array) -> Array:
    """uint32 bits -> float32 uniform in [0, 1) from the top 23 bits (exponent-fill trick)."""
    mantissa = lax.shift_right_logical(bits, np.uint32(9)) | np.uint32(0x3F800000)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0


def draw_noise(keys: Array, step_index: Array, like: Array) -> tuple[Array, Array]:
    """The noise of step `step_index` for every chain: (normal shaped like `like`, uniform).

    Args:
      keys: (chains,) typed per-chain keys (see `chain_keys`).
      step_index: int scalar in [0, 2^32 - 1), may be traced; each index is its own stream.
      like: (chains, ...) float array giving the shape and dtype of the normal draw.

    Returns:
      normal (chains, ...) standard normal and uniform (chains,) in (0, 1), same dtype as `like`.

    For threefry keys and float32 (the default) the stream of chain c at step t is the Threefry
    cipher under chain c's key of the counter blocks (t, 0), (t, 1), ... (counter-based, like
    jax.random itself), computed by `threefry2x32`. Other key types or dtypes use
    `jax.random.uniform(fold_in(key, t), ...)`. Normals are sqrt(2) erfinv(v) for v uniform in
    (-1, 1), as in jax.random.normal.
    """
    dtype = like.dtype
    event_shape = like.shape[1:]
    size = math.prod(event_shape)
    if isinstance(step_index, (int, np.integer)):
        if not 0 <= int(step_index) < 2**32:
            raise ValueError(f'step_index: got {step_index}, expected 0 <= value < 2^32.')
        step_index = np.uint32(step_index)
    step_index = jnp.asarray(step_index).astype(jnp.uint32)
    if _is_threefry(keys) and dtype == jnp.float32:
        # Blocks (t, j), j = 0, 1, ..., each giving two words; size + 1 words are needed.
        blocks = jnp.arange((size + 2) // 2, dtype=jnp.uint32)
        key_data = jax.random.key_data(keys)[:, None, :]                  # (chains, 1, 2)
        bits = jnp.concatenate(threefry2x32(key_data, step_index, blocks), axis=1)
        unit = _unit_float32(bits[:, :size + 1])                     # [0, 1)
    else:
        unit = jax.vmap(lambda k: jax.random.uniform(
            jax.random.fold_in(k, step_index), (size + 1,), dtype))(keys)
    tiny = np.finfo(dtype).tiny
    signed = jnp.clip(2.0 * unit[:, :size] - 1.0, -1.0 + np.finfo(dtype).epsneg, 1.0)
    normal = np.sqrt(2.0).astype(dtype) * lax.erf_inv(signed.astype(dtype))
    uniform = jnp.maximum(unit[:, size], tiny).astype(dtype)           # (0, 1)
    return jnp.reshape(normal, like.shape), uniform


def _is_typed_key(key: Array) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def chain_keys(key: Array, num_chains: int) -> Array:
    """One typed PRNG key per chain, shape (num_chains,), from a single key.

    `sample(key, ...)` with a single key uses exactly these keys; pass them (sharded like the
    positions) to run the same chains split over devices.
    """
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not _is_typed_key(key):
        key = jax.random.wrap_key_data(key)
    if key.shape != ():
        raise ValueError(f'key: expected a single PRNG key, got shape {key.shape}.')
    return jax.random.split(key, num_chains)


def _resolve_chain_keys(key: Array, num_chains: int) -> Array:
    """A single key (split per chain) or per-chain keys ((chains,) typed or (chains, 2) raw)."""
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if not _is_typed_key(key):
        if key.dtype != jnp.uint32 or key.ndim not in (1, 2):
            raise ValueError(
                f'key: expected a PRNG key, or one key per chain, got dtype {key.dtype} '
                f'and shape {key.shape}.')
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return jax.random.split(key, num_chains)
    if key.shape == (num_chains,):
        return key
    raise ValueError(
        f'key: expected a single key or one key per chain (shape ({num_chains},)), '
        f'got key shape {key.shape}.')


def _hwio_spec(ndim: int) -> tuple[int, ...]:
    """conv rhs_spec (out-feature dim, in-feature dim, spatial dims...) of an (*K, I, O) kernel."""
    return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))


def _is_conv_to_canonicalise(eqn) -> bool:
    return (eqn.primitive is _prims.conv_general_dilated_p
            and tuple(eqn.params['dimension_numbers'].rhs_spec)
            != _hwio_spec(len(eqn.params['dimension_numbers'].rhs_spec)))


def _needs_conv_rewrite(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _is_conv_to_canonicalise(eqn):
            return True
        if eqn.primitive is _prims.jit_p and _needs_conv_rewrite(eqn.params['jaxpr'].jaxpr):
            return True
    return False


def _eval_with_hwio_kernels(jaxpr, consts, *args) -> list:
    """Evaluates `jaxpr` like jax.core.eval_jaxpr, but every convolution whose kernel is not laid
    out (*K, I, O) gets its kernel transposed to that layout first (same result, up to float
    summation order: the transpose is a relabelling). Nested jit calls are inlined."""
    env = {}

    def read(v):
        return v.val if isinstance(v, _jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if _is_conv_to_canonicalise(eqn):
            lhs, rhs = values
            numbers = eqn.params['dimension_numbers']
            spec = tuple(numbers.rhs_spec)
            rhs = jnp.transpose(rhs, spec[2:] + (spec[1], spec[0]))
            numbers = lax.ConvDimensionNumbers(numbers.lhs_spec, _hwio_spec(rhs.ndim),
                                               numbers.out_spec)
            outs = [_prims.conv_general_dilated_p.bind(
                lhs, rhs, **dict(eqn.params, dimension_numbers=numbers))]
        elif eqn.primitive is _prims.jit_p:
            inner = eqn.params['jaxpr']
            outs = _eval_with_hwio_kernels(inner.jaxpr, inner.consts, *values)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def with_hwio_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with every convolution kernel laid out (*K, I, O) (HWIO), for XLA:CPU inside loops.

    Why: the input-gradient of a convolution is a convolution with the kernel's feature axes
    swapped (dimension labels '01oi'). In straight-line code XLA:CPU materialises the transposed
    kernel and hands the convolution to its fast library (YNNPACK); inside a `while` loop (every
    `lax.scan`) it does not, and the convolution falls back to a generic emitter: the SNGAN
    potential's gradient ran ~2.5x slower per step inside `sample`'s scan than outside it. This
    traces `fn` and transposes such kernels explicitly (a cheap copy of the weights), which
    restores the fast path inside loops (measured 8.2 s -> 2.8 s per ULA step on the SNGAN pair
    at batch 64 on a loaded 2-core machine). Functions without such convolutions are returned
    unchanged. The result is the same function.
    """

    def wrapped(*args):
        closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not _needs_conv_rewrite(closed.jaxpr):
            return fn(*args)
        out_tree = jax.tree.structure(out_shapes)
        flat = _eval_with_hwio_kernels(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(out_tree, flat)

    return wrapped


def _value_and_grad(potential_fn: PotentialFn,
                    hwio_convolutions: bool = False) -> Callable[[Array], tuple[Array, Array]]:
    """z (chains, ...) -> (U (chains,), grad U (chains, ...)) in one forward/backward pass.

    Differentiating the sum gives per-chain gradients because chains are independent.
    """

    def total(z):
        u = potential_fn(z)
        return jnp.sum(u), u

    grad_fn = jax.value_and_grad(total, has_aux=True)
    if hwio_convolutions:
        grad_fn = with_hwio_convolutions(grad_fn)

    def value_and_grad(z):
        (_, u), g = grad_fn(z)
        return u, g

    return value_and_grad


def _check_potential_shape(u: Array, position: Array) -> None:
    if u.shape != position.shape[:1]:
        raise ValueError(
            f'potential_fn: must return one potential per chain, shape {position.shape[:1]}, '
            f'for positions of shape {position.shape}; got shape {u.shape}.')


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


def _gradient_init(value_and_grad):
    def init(position, normal):
        del normal
        u, g = value_and_grad(position)
        _check_potential_shape(u, position)
        return State(position, u, g)

    return init


def _ula_kernel(potential_fn: PotentialFn, hwio_convolutions: bool) -> Kernel:
    value_and_grad = _value_and_grad(potential_fn, hwio_convolutions)

    def step(state, step_size, normal, uniform):
        del uniform
        z, g = state.position, state.grad
        s = _per_chain(step_size, z)
        z_new = z - s * g + jnp.sqrt(2.0 * s) * normal
        u_new, g_new = value_and_grad(z_new)
        finite = jnp.isfinite(u_new) & _all_finite(g_new)
        new_state = _select(finite, State(z_new, u_new, g_new), state)
        return new_state, StepInfo(finite, finite.astype(z.dtype), ~finite)

    return Kernel(_gradient_init(value_and_grad), step)


def _mh_accept(uniform, log_ratio, finite, dtype):
    """Per-chain MH decision; NaN log ratios compare False, so they are rejected."""
    log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
    accepted = finite & (jnp.log(uniform) < log_ratio)
    prob = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
    return accepted, prob.astype(dtype)


def _mala_kernel(potential_fn: PotentialFn, hwio_convolutions: bool) -> Kernel:
    value_and_grad = _value_and_grad(potential_fn, hwio_convolutions)

    def step(state, step_size, normal, uniform):
        z, g, u = state.position, state.grad, state.potential
        s = _per_chain(step_size, z)
        z_new = z - s * g + jnp.sqrt(2.0 * s) * normal
        u_new, g_new = value_and_grad(z_new)
        # log q(a | b) = -|a - b + s grad U(b)|^2 / (4 s), summed over the event axes.
        log_q_back = -_sum_event(jnp.square(z - z_new + s * g_new)) / (4.0 * step_size)
        log_q_forward = -_sum_event(jnp.square(z_new - z + s * g)) / (4.0 * step_size)
        log_ratio = u - u_new + log_q_back - log_q_forward
        finite = jnp.isfinite(u_new) & _all_finite(g_new)
        accepted, prob = _mh_accept(uniform, log_ratio, finite, z.dtype)
        new_state = _select(accepted, State(z_new, u_new, g_new), state)
        return new_state, StepInfo(accepted, prob, ~finite)

    return Kernel(_gradient_init(value_and_grad), step)


def _hmc_kernel(potential_fn: PotentialFn, num_leapfrog_steps: int,
                hwio_convolutions: bool) -> Kernel:
    value_and_grad = _value_and_grad(potential_fn, hwio_convolutions)

    def step(state, step_size, normal, uniform):
        h = _per_chain(step_size, state.position)
        p0 = normal

        def leapfrog(carry, _):
            z, p, _, g = carry
            p = p - 0.5 * h * g
            z = z + h * p
            u, g = value_and_grad(z)
            p = p - 0.5 * h * g
            return (z, p, u, g), None

        (z_new, p_new, u_new, g_new), _ = lax.scan(
            leapfrog, (state.position, p0, state.potential, state.grad), None,
            length=num_leapfrog_steps)
        h_old = state.potential + 0.5 * _sum_event(jnp.square(p0))
        h_new = u_new + 0.5 * _sum_event(jnp.square(p_new))
        finite = jnp.isfinite(u_new) & _all_finite(g_new) & _all_finite(p_new)
        accepted, prob = _mh_accept(uniform, h_old - h_new, finite, state.position.dtype)
        new_state = _select(accepted, State(z_new, u_new, g_new), state)
        return new_state, StepInfo(accepted, prob, ~finite)

    return Kernel(_gradient_init(value_and_grad), step)


def _kla_kernel(potential_fn: PotentialFn, friction: float, hwio_convolutions: bool) -> Kernel:
    value_and_grad = _value_and_grad(potential_fn, hwio_convolutions)

    def init(position, normal):
        u, g = value_and_grad(position)
        _check_potential_shape(u, position)
        return State(position, u, g, normal)

    def step(state, step_size, normal, uniform):
        del uniform
        z, g, v = state.position, state.grad, state.velocity
        h = _per_chain(step_size, z)
        decay = jnp.exp(-friction * h)
        v = v - 0.5 * h * g                                   # B
        z = z + 0.5 * h * v                                   # A
        v = decay * v + jnp.sqrt(1.0 - decay**2) * normal     # O
        z = z + 0.5 * h * v                                   # A
        u_new, g_new = value_and_grad(z)
        v = v - 0.5 * h * g_new                               # B
        finite = jnp.isfinite(u_new) & _all_finite(g_new) & _all_finite(v)
        new_state = _select(finite, State(z, u_new, g_new, v), state)
        return new_state, StepInfo(finite, finite.astype(z.dtype), ~finite)

    return Kernel(init, step)


def _imh_kernel(potential_fn: PotentialFn) -> Kernel:
    def init(position, normal):
        del normal
        u = potential_fn(position)
        _check_potential_shape(u, position)
        return State(position, u, None)

    def step(state, step_size, normal, uniform):
        del step_size
        z = state.position
        z_new = normal
        u_new = potential_fn(z_new)
        # log w(z) = -(U(z) - |z|^2 / 2): target over proposal density, up to constants.
        log_w_old = -(state.potential - 0.5 * _sum_event(jnp.square(z)))
        log_w_new = -(u_new - 0.5 * _sum_event(jnp.square(z_new)))
        finite = jnp.isfinite(u_new)
        accepted, prob = _mh_accept(uniform, log_w_new - log_w_old, finite, z.dtype)
        new_state = _select(accepted, State(z_new, u_new, None), state)
        return new_state, StepInfo(accepted, prob, ~finite)

    return Kernel(init, step)


def build_kernel(kernel: str, potential_fn: PotentialFn, *,
                 num_leapfrog_steps: Optional[int] = None,
                 friction: Optional[float] = None,
                 hwio_convolutions: Optional[bool] = None) -> Kernel:
    """The `Kernel` (init, step) named `kernel` for `potential_fn`.

    num_leapfrog_steps: 'hmc' only (default DEFAULT_NUM_LEAPFROG_STEPS); ignored otherwise.
    friction: 'kla' only, gamma > 0 in units of 1 / (time of one unit step size) (default
      DEFAULT_FRICTION); ignored otherwise.
    hwio_convolutions: evaluate the potential's gradient through `with_hwio_convolutions`;
      None (default) means on the CPU backend only, where it matters.
    """
    if hwio_convolutions is None:
        hwio_convolutions = jax.default_backend() == 'cpu'
    if kernel not in KERNELS:
        raise ValueError(f'kernel: got {kernel!r}, expected one of {KERNELS}.')
    if kernel == 'ula':
        return _ula_kernel(potential_fn, hwio_convolutions)
    if kernel == 'mala':
        return _mala_kernel(potential_fn, hwio_convolutions)
    if kernel == 'hmc':
        steps = DEFAULT_NUM_LEAPFROG_STEPS if num_leapfrog_steps is None else num_leapfrog_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f'num_leapfrog_steps: got {num_leapfrog_steps!r}, expected an int >= 1.')
        return _hmc_kernel(potential_fn, steps, hwio_convolutions)
    if kernel == 'kla':
        gamma = DEFAULT_FRICTION if friction is None else friction
        if _is_concrete_number(gamma) and not float(gamma) > 0.0:
            raise ValueError(f'friction: got {friction!r}, expected a number > 0.')
        return _kla_kernel(potential_fn, gamma, hwio_convolutions)
    return _imh_kernel(potential_fn)


# ----------------------------------------------------------------------------------------------
# Step-size control
# ----------------------------------------------------------------------------------------------


class DualAveragingState(NamedTuple):
    """Dual averaging (Hoffman & Gelman 2014, algorithm 5) of a log step-size multiplier.

    log_factor: current log multiplier; log_factor_avg: its weighted average (the frozen value);
    error_avg: running mean of (target - acceptance) ("H bar"); count: number of updates.
    """

    log_factor: Array
    log_factor_avg: Array
    error_avg: Array
    count: Array


def dual_averaging_init(zero: Optional[Array] = None) -> DualAveragingState:
    """Initial state; `zero` (float32 scalar 0) may carry shard_map's device-varying type."""
    zero = jnp.zeros((), jnp.float32) if zero is None else zero
    return DualAveragingState(zero, zero, zero, zero)


def dual_averaging_update(state: DualAveragingState, acceptance: Array,
                          target: float) -> DualAveragingState:
    """One update toward `target` given this step's mean acceptance probability (a scalar).

    The shrinkage point is mu = log(10) relative to the initial step size, as in H&G's log(10 eps0).
    """
    count = state.count + 1.0
    eta = 1.0 / (count + DUAL_AVERAGING_T0)
    error_avg = (1.0 - eta) * state.error_avg + eta * (target - acceptance)
    log_factor = math.log(10.0) - jnp.sqrt(count) / DUAL_AVERAGING_GAMMA * error_avg
    log_factor = jnp.clip(log_factor, -_MAX_LOG_STEP_FACTOR, _MAX_LOG_STEP_FACTOR)
    weight = count ** (-DUAL_AVERAGING_KAPPA)
    log_factor_avg = weight * log_factor + (1.0 - weight) * state.log_factor_avg
    return DualAveragingState(log_factor, log_factor_avg, error_avg, count)


def decay_schedule(decay_factor: float, decay_every: int) -> Schedule:
    """The authors' recipe: multiplier decay_factor ** (step // decay_every)."""

    def schedule(step):
        return jnp.asarray(decay_factor, jnp.float32) ** (step // decay_every)

    return schedule


def _is_concrete_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _resolve_schedule(step_size_schedule, decay_factor, decay_every) -> Optional[Schedule]:
    has_decay = decay_factor is not None or decay_every is not None
    if has_decay:
        if decay_factor is None or decay_every is None:
            raise ValueError(
                'decay_factor, decay_every: give both or neither, got '
                f'decay_factor={decay_factor!r}, decay_every={decay_every!r}.')
        if isinstance(decay_every, bool) or not isinstance(decay_every, int) or decay_every < 1:
            raise ValueError(f'decay_every: got {decay_every!r}, expected an int >= 1.')
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


# ----------------------------------------------------------------------------------------------
# The sampling loop
# ----------------------------------------------------------------------------------------------


class _Carry(NamedTuple):
    state: State
    num_accepted: Array   # (chains,) float, over sampling steps
    num_nonfinite: Array  # (chains,) int32, over all steps


def _validate_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}: got {value!r}, expected an int >= {minimum}.')


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

    Pure and jit-able (all keyword options but `step_size`/`decay_factor`/`friction` values are
    static); usable under `jax.vmap`, inside `lax.scan`, and under `shard_map`/`pmap` with chains
    split across devices (pass per-chain keys, see `chain_keys`).

    Args:
      key: a PRNG key (typed or raw uint32), or one key per chain (shape (chains,) typed or
        (chains, 2) raw). A single key is split with `chain_keys`.
      potential_fn: positions (chains, ...) -> potentials (chains,); must not couple chains.
      initial_position: (chains, ...) float array; the potential there must be finite.
      kernel: one of KERNELS.
      num_steps: sampling steps (>= 0) after the warm-up.
      step_size: scalar or per-chain (chains,) base step size (Langevin time step for 'ula',
        'mala', 'kla'; leapfrog step for 'hmc'). Required except for 'imh', which ignores it.
      num_leapfrog_steps: 'hmc' only (default 10).
      friction: 'kla' only (default 1.0).
      step_size_schedule: None or 'constant' (multiplier 1), or a callable mapping the sampling
        step index (int32 scalar, 0 at the first step after warm-up) to a multiplier.
      decay_factor, decay_every: the authors' recipe, multiplier decay_factor ** (t // decay_every);
        exclusive with a callable schedule.
      num_adaptation_steps: warm-up steps of dual averaging ('mala' and 'hmc' only). The step size
        is then frozen at the averaged value. The adapted quantity is one multiplier shared by all
        chains (it scales a per-chain base step size if one is given), driven by the mean
        acceptance probability over chains: all chains target the same distribution, so they have
        the same good step size, and averaging over chains removes most of the noise of the
        single-chain acceptance signal, so a short warm-up suffices. Under shard_map/pmap pass
        `axis_name` so the mean is taken over every device's chains (otherwise each device adapts
        on its own chains). The schedule does not act during warm-up. Warm-up steps are not counted
        in `acceptance_rate` nor recorded in the trace.
      target_acceptance: in (0, 1); default 0.574 for 'mala', 0.65 for 'hmc'.
      axis_name: mapped axis (shard_map/pmap/vmap) to average the adaptation signal over.
      thin: record every `thin`-th position (and potential, block acceptance) in the trace.
      unroll: steps per scan iteration (int >= 1, or True for a fully unrolled loop).
      hwio_convolutions: see `with_hwio_convolutions`; None: on the CPU backend only.

    Returns:
      SampleResult (see its docstring).
    """
    if kernel not in KERNELS:
        raise ValueError(f'kernel: got {kernel!r}, expected one of {KERNELS}.')
    _validate_int('num_steps', num_steps, 0)
    _validate_int('num_adaptation_steps', num_adaptation_steps, 0)
    _validate_int('thin', thin, 1, allow_none=True)
    if unroll is not True:
        _validate_int('unroll', unroll, 1)
    if num_adaptation_steps > 0 and kernel not in ADAPTIVE_KERNELS:
        raise ValueError(
            f'num_adaptation_steps: got {num_adaptation_steps} for kernel {kernel!r}; step-size '
            f'adaptation is only defined for {ADAPTIVE_KERNELS}.')
    if target_acceptance is None:
        target_acceptance = DEFAULT_TARGET_ACCEPTANCE.get(kernel, 0.0)
    elif not 0.0 < float(target_acceptance) < 1.0:
        raise ValueError(f'target_acceptance: got {target_acceptance!r}, expected 0 < value < 1.')
    schedule = _resolve_schedule(step_size_schedule, decay_factor, decay_every)

    position = jnp.asarray(initial_position)
    if position.ndim < 1 or position.shape[0] < 1:
        raise ValueError(
            'initial_position: expected shape (chains, ...) with chains >= 1, got '
            f'{position.shape}.')
    if not jnp.issubdtype(position.dtype, jnp.floating):
        raise ValueError(f'initial_position: expected a float array, got dtype {position.dtype}.')
    num_chains = position.shape[0]
    dtype = position.dtype

    if kernel == 'imh':
        base_step = jnp.zeros((num_chains,), dtype)
    else:
        if step_size is None:
            raise ValueError(f'step_size: required for kernel {kernel!r}.')
        if _is_concrete_number(step_size) and not float(step_size) > 0.0:
            raise ValueError(f'step_size: got {step_size!r}, expected a number > 0.')
        base_step = jnp.asarray(step_size, dtype)
        if base_step.ndim == 0:
            base_step = jnp.broadcast_to(base_step, (num_chains,))
        elif base_step.shape != (num_chains,):
            raise ValueError(
                f'step_size: expected a scalar or one value per chain, shape ({num_chains},), '
                f'got shape {base_step.shape}.')

    keys = _resolve_chain_keys(key, num_chains)
    mcmc = build_kernel(kernel, potential_fn, num_leapfrog_steps=num_leapfrog_steps,
                        friction=friction, hwio_convolutions=hwio_convolutions)
    # Step t draws from stream t of every chain's key; init (KLA's velocity) from the last stream.
    state = mcmc.init(position, draw_noise(keys, _INIT_STREAM, position)[0])

    def step(state, step_size, t):
        return mcmc.step(state, step_size, *draw_noise(keys, t, state.position))

    # ---- warm-up with dual averaging -------------------------------------------------------
    log_factor = jnp.zeros((), dtype)
    # Counters are zeros_like a per-chain value so that under shard_map they are device-varying
    # like the quantities added to them (a scan carry must keep its type).
    num_nonfinite = jnp.zeros_like(state.potential, dtype=jnp.int32)
    if num_adaptation_steps > 0:
        # The adaptation state is reduced like the acceptance signal: per device (varying) unless
        # averaged over `axis_name`.
        zero = jnp.zeros_like(jnp.mean(state.potential), dtype=jnp.float32)
        if axis_name is not None:
            zero = lax.pmean(zero, axis_name)

        def warmup_step(carry, t):
            state, adapt, nonfinite = carry
            eps = base_step * jnp.exp(adapt.log_factor).astype(dtype)
            state, info = step(state, eps, t)
            mean_prob = jnp.mean(info.acceptance_probability.astype(jnp.float32))
            if axis_name is not None:
                mean_prob = lax.pmean(mean_prob, axis_name)
            adapt = dual_averaging_update(adapt, mean_prob, target_acceptance)
            return (state, adapt, nonfinite + info.nonfinite.astype(jnp.int32)), None

        (state, adapt, num_nonfinite), _ = lax.scan(
            warmup_step, (state, dual_averaging_init(zero), num_nonfinite),
            jnp.arange(num_adaptation_steps, dtype=jnp.int32),
            unroll=_cap_unroll(unroll, num_adaptation_steps))
        log_factor = adapt.log_factor_avg.astype(dtype)

    frozen_step = base_step * jnp.exp(log_factor)
    first = num_adaptation_steps

    def effective_step(t):
        if schedule is None:
            return frozen_step
        return frozen_step * jnp.asarray(schedule(t - first), dtype)

    def one_step(carry: _Carry, t) -> tuple[_Carry, None]:
        state, info = step(carry.state, effective_step(t), t)
        return _Carry(state,
                      carry.num_accepted + info.accepted.astype(dtype),
                      carry.num_nonfinite + info.nonfinite.astype(jnp.int32)), None

    carry = _Carry(state, jnp.zeros_like(state.potential, dtype=dtype), num_nonfinite)
    trace = trace_potential = trace_acceptance = None
    if thin is None:
        carry, _ = lax.scan(one_step, carry, jnp.arange(first, first + num_steps, dtype=jnp.int32),
                            unroll=_cap_unroll(unroll, num_steps))
    else:
        num_blocks = num_steps // thin

        def block(carry: _Carry, block_index):
            accepted_before = carry.num_accepted
            start = first + block_index * thin
            carry, _ = lax.scan(one_step, carry, start + jnp.arange(thin, dtype=jnp.int32),
                                unroll=_cap_unroll(unroll, thin))
            record = (carry.state.position, carry.state.potential,
                      (carry.num_accepted - accepted_before) / thin)
            return carry, record

        outer_unroll = 1 if unroll is True else max(1, unroll // thin)
        carry, (trace, trace_potential, trace_acceptance) = lax.scan(
            block, carry, jnp.arange(num_blocks, dtype=jnp.int32),
            unroll=_cap_unroll(outer_unroll, num_blocks))
        remainder = num_steps - num_blocks * thin
        if remainder:
            start = first + num_blocks * thin
            carry, _ = lax.scan(one_step, carry,
                                start + jnp.arange(remainder, dtype=jnp.int32),
                                unroll=_cap_unroll(unroll, remainder))

    acceptance_rate = (carry.num_accepted / num_steps if num_steps > 0
                       else jnp.full((num_chains,), jnp.nan, dtype))
    final_step = None
    if kernel != 'imh':
        final_step = effective_step(jnp.asarray(first + max(num_steps, 1) - 1, jnp.int32))
    return SampleResult(
        position=carry.state.position,
        potential=carry.state.potential,
        acceptance_rate=acceptance_rate,
        num_nonfinite=carry.num_nonfinite,
        step_size=final_step,
        trace=trace,
        trace_potential=trace_potential,
        trace_acceptance=trace_acceptance,
    )


def _cap_unroll(unroll: Union[int, bool], length: int) -> Union[int, bool]:
    if unroll is True:
        return True
    return max(1, min(unroll, length))


# ----------------------------------------------------------------------------------------------
# Diagnostics
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


def effective_sample_size(samples: Array) -> Array:
    """Multi-chain effective sample size per dimension, Geyer's initial monotone sequence.

    Args:
      samples: (steps, chains, ...) draws, steps first (e.g. `SampleResult.trace`); steps >= 4.

    Returns:
      (...) ESS of the mean of each coordinate over all steps * chains draws.

    Autocorrelations are combined over chains as in Stan (Gelman et al., BDA3 section 11.5):
    rho_t = 1 - (W - mean_c acov_c(t)) / var_plus, var_plus = (n - 1)/n W + B/n. Pair sums
    P_k = rho_2k + rho_2k+1 are kept while positive and made non-increasing (Geyer 1992), tau =
    -1 + 2 sum_k P_k, ESS = n m / tau, with tau floored at 1 / log10(n m) as in Stan.
    """
    x = jnp.asarray(samples)
    if x.ndim < 2 or x.shape[0] < 4:
        raise ValueError(
            f'samples: expected shape (steps >= 4, chains, ...), got {x.shape}.')
    n, m = x.shape[:2]
    event_shape = x.shape[2:]
    x = jnp.reshape(x, (n, m, -1)).astype(jnp.promote_types(x.dtype, jnp.float32))
    chain_mean = jnp.mean(x, axis=0)
    centred = x - chain_mean
    fft_len = 1 << (2 * n - 1).bit_length()
    spectrum = jnp.fft.rfft(centred, n=fft_len, axis=0)
    acov = jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=fft_len, axis=0)[:n] / n  # (n, m, D)
    within = jnp.mean(acov[0], axis=0) * n / (n - 1)
    between_over_n = jnp.var(chain_mean, axis=0, ddof=1) if m > 1 else jnp.zeros_like(within)
    var_plus = within * (n - 1) / n + between_over_n
    rho = 1.0 - (within - jnp.mean(acov, axis=1)) / var_plus  # (n, D)
    num_pairs = n // 2
    pairs = rho[:2 * num_pairs:2] + rho[1:2 * num_pairs:2]     # (num_pairs, D)
    positive = jnp.cumprod(pairs > 0, axis=0).astype(bool)
    monotone = lax.cummin(pairs, axis=0)
    tau = -1.0 + 2.0 * jnp.sum(jnp.where(positive, monotone, 0.0), axis=0)
    tau = jnp.maximum(tau, 1.0 / math.log10(n * m))
    return jnp.reshape(n * m / tau, event_shape)
