"""Tests of kale_jax.hmc against targets with known moments.

Statistical tolerances. Unless said otherwise an estimate is a mean over many independent chains
of a per-chain time average; those per-chain averages are i.i.d., so the Monte-Carlo standard
error (SE) of the estimate is their sample standard deviation / sqrt(chains), whatever the
autocorrelation inside a chain. We assert |estimate - truth| <= Z_TOL * SE with Z_TOL = 4.5:
a correct sampler fails one comparison with probability 6.8e-6, so even the 65 comparisons of
the 10-D test fail together with probability < 5e-4 (Bonferroni). Seeds are fixed, so runs are
reproducible. Where a test's power matters, it also asserts that SE is small enough (or that a
known-wrong answer lies many SEs away), so a tolerance cannot silently become vacuous.
"""
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from kale_jax import hmc

import hmc_reference
from helpers import conv_potential

Z_TOL = 4.5


def _check_within_mc_error(estimate, truth, se, name):
    z = np.abs(np.asarray(estimate) - np.asarray(truth)) / np.asarray(se)
    assert np.all(z <= Z_TOL), f'{name}: max |error| / SE = {z.max():.2f} > {Z_TOL}'


def _chain_mean_and_se(per_chain):
    """Mean over chains (axis 0) and its standard error."""
    per_chain = np.asarray(per_chain, np.float64)
    return per_chain.mean(0), per_chain.std(0, ddof=1) / np.sqrt(per_chain.shape[0])


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------

DIM = 10


def _gaussian_10d():
    """Correlated N(mean, cov) in 10-D, variances 0.3..1 along random axes."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    cov = (rotation * np.linspace(0.3, 1.0, DIM)) @ rotation.T
    mean = 0.25 * rng.normal(size=DIM)
    return mean, cov


def _gaussian_potential(mean, cov):
    """U(z) written as prior + energy, U = |z|^2/2 + E(z), the form IMH assumes (the GEBM form)."""
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mu = jnp.asarray(mean, jnp.float32)

    def energy(z):
        r = z - mu
        return 0.5 * jnp.einsum('ci,ij,cj->c', r, precision, r) - 0.5 * jnp.sum(z * z, axis=1)

    return lambda z: 0.5 * jnp.sum(z * z, axis=1) + energy(z)


def _quadratic_1d(variance):
    return lambda z: 0.5 * jnp.sum(z * z, axis=tuple(range(1, z.ndim))) / variance


# 1-D two-component mixture 0.5 N(-1, 0.5^2) + 0.5 N(1, 0.5^2), sampled exactly for the
# invariance test.
MIX_LOC, MIX_SCALE = 1.0, 0.5


def _mixture_potential(z):
    x = z[:, 0]
    logp = jnp.logaddexp(-0.5 * ((x - MIX_LOC) / MIX_SCALE) ** 2,
                         -0.5 * ((x + MIX_LOC) / MIX_SCALE) ** 2)
    return -logp


def _mixture_draws(rng, n):
    signs = rng.choice([-1.0, 1.0], size=n)
    return (signs * MIX_LOC + MIX_SCALE * rng.normal(size=n)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Correctness on targets with known moments
# ------------------------------------------------------------------------------------------------

GAUSSIAN_10D_RUNS = {
    # MALA adapts its step size toward 0.574 during a warm-up; HMC keeps a fixed step size
    # (adapted HMC with a fixed trajectory length can resonate with this target's periods).
    'mala': dict(step_size=0.1, num_adaptation_steps=300),
    'hmc': dict(step_size=0.3, num_leapfrog_steps=5),
    'imh': dict(),
}
# (burn-in, kept) steps: HMC's draws here are nearly independent (ESS / draws ~ 1), MALA's and
# IMH's about 0.1-0.15.
GAUSSIAN_10D_STEPS = {'mala': (200, 600), 'hmc': (100, 200), 'imh': (200, 600)}
GAUSSIAN_10D_CHAINS = {'mala': 256, 'hmc': 128, 'imh': 256}


@pytest.mark.parametrize('kernel', sorted(GAUSSIAN_10D_RUNS))
def test_gaussian_10d_mean_and_covariance(kernel):
    mean, cov = _gaussian_10d()
    chains = GAUSSIAN_10D_CHAINS[kernel]
    burn_in, kept = GAUSSIAN_10D_STEPS[kernel]
    start = jax.random.normal(jax.random.key(1), (chains, DIM))  # the prior, not the target
    result = hmc.sample(jax.random.key(2), _gaussian_potential(mean, cov), start, kernel=kernel,
                        num_steps=burn_in + kept, thin=1, **GAUSSIAN_10D_RUNS[kernel])
    draws = np.asarray(result.trace[burn_in:], np.float64)          # (kept, chains, DIM)
    chain_means = draws.mean(0)
    centred = draws - mean                                          # about the true mean
    chain_covs = np.einsum('tci,tcj->cij', centred, centred) / kept
    est_mean, se_mean = _chain_mean_and_se(chain_means)
    est_cov, se_cov = _chain_mean_and_se(chain_covs)
    _check_within_mc_error(est_mean, mean, se_mean, f'{kernel} mean')
    iu = np.triu_indices(DIM)
    _check_within_mc_error(est_cov[iu], cov[iu], se_cov[iu], f'{kernel} covariance')
    # Power: these runs resolve every moment to better than 0.02 (a 4.5-SE band of < 0.09).
    assert se_mean.max() < 0.02 and se_cov.max() < 0.02
    assert np.all(np.asarray(result.num_nonfinite) == 0)
    if kernel == 'mala':
        rate, se = _chain_mean_and_se(result.acceptance_rate)
        # Dual averaging freezes an average of noisy iterates, so the rate misses the target by a
        # little: 0.05 is an algorithmic tolerance (well above the rate's MC error, se ~ 0.003).
        assert abs(rate - hmc.DEFAULT_TARGET_ACCEPTANCE['mala']) < 0.05 + Z_TOL * se
        # The shared step size moved from the poor initial 0.1 (acceptance ~ 1).
        step = np.asarray(result.step_size)
        assert np.all(step == step[0]) and step[0] > 0.2


def _ula_stationary_variance(step, variance):
    """ULA on N(0, v) is the AR(1) z' = (1 - h/v) z + sqrt(2h) xi."""
    return 2 * step / (1 - (1 - step / variance) ** 2)


def test_ula_stationary_variance_matches_discretisation():
    variance = 2.0
    steps = np.array([0.2, 1.0, 2.0, 3.0], np.float32)
    per_step, burn_in, kept = 1024, 150, 200  # |1 - h/v| <= 0.9, so 0.9^150 < 1e-6 of the start
    step_size = np.repeat(steps, per_step)
    result = hmc.sample(jax.random.key(4), _quadratic_1d(variance),
                        jnp.zeros((steps.size * per_step, 1)), kernel='ula',
                        num_steps=burn_in + kept, step_size=jnp.asarray(step_size), thin=1)
    second_moment = (np.asarray(result.trace[burn_in:, :, 0], np.float64) ** 2).mean(0)
    for i, h in enumerate(steps):
        est, se = _chain_mean_and_se(second_moment[i * per_step:(i + 1) * per_step])
        exact = _ula_stationary_variance(float(h), variance)
        _check_within_mc_error(est, exact, se, f'ULA variance at h={h}')
        if h >= 1.0:  # The formula is what is tested: the target variance is far outside the band.
            assert abs(exact - variance) > 3 * Z_TOL * se
    np.testing.assert_array_equal(result.acceptance_rate, 1.0)


def _baoab_stationary_covariance(variance, friction, step):
    """Exact stationary covariance of (z, v) under one BAOAB step for U = z^2 / (2 variance)."""
    e = np.exp(-friction * step)
    kick = np.array([[1.0, 0.0], [-0.5 * step / variance, 1.0]])
    drift = np.array([[1.0, 0.5 * step], [0.0, 1.0]])
    damp = np.diag([1.0, e])
    linear = kick @ drift @ damp @ drift @ kick
    noise = kick @ drift @ np.array([[0.0], [np.sqrt(1 - e * e)]])
    return scipy.linalg.solve_discrete_lyapunov(linear, noise @ noise.T)


def test_kla_stationary_covariance_matches_baoab():
    variance, friction = 2.0, 1.0
    steps = np.array([0.5, 1.5, 2.5], np.float32)  # stable for h < 2 sqrt(variance) = 2.83
    per_step, burn_in, kept = 1024, 150, 300
    potential = _quadratic_1d(variance)
    kernel = hmc.build_kernel('kla', potential, friction=friction)
    num_chains = steps.size * per_step
    keys = hmc.chain_keys(jax.random.key(5), num_chains)
    step_size = jnp.asarray(np.repeat(steps, per_step))

    @jax.jit
    def run(keys):
        start = jnp.zeros((num_chains, 1))
        state = kernel.init(start, hmc.draw_noise(keys, 2**32 - 1, start)[0])

        def body(state, t):
            state, _ = kernel.step(state, step_size, *hmc.draw_noise(keys, t, state.position))
            return state, (state.position[:, 0], state.velocity[:, 0])

        return jax.lax.scan(body, state, jnp.arange(burn_in + kept))[1]

    positions, velocities = (np.asarray(a[burn_in:], np.float64) for a in run(keys))
    for i, h in enumerate(steps):
        exact = _baoab_stationary_covariance(variance, friction, float(h))
        # BAOAB is exact in position for Gaussians, and its velocity variance is 1 - h^2 w^2 / 4.
        np.testing.assert_allclose(exact[0, 0], variance, rtol=1e-9)
        np.testing.assert_allclose(exact[1, 1], 1 - h * h / (4 * variance), rtol=1e-6)
        chains = slice(i * per_step, (i + 1) * per_step)
        for name, values, truth in (('position', positions, exact[0, 0]),
                                    ('velocity', velocities, exact[1, 1])):
            est, se = _chain_mean_and_se((values[:, chains] ** 2).mean(0))
            _check_within_mc_error(est, truth, se, f'KLA {name} variance at h={h}')
        # Power: at h = 2.5 the velocity variance (0.22) is far from the continuous-time 1.
        if h == 2.5:
            assert abs(1.0 - exact[1, 1]) > 3 * Z_TOL * se


# ------------------------------------------------------------------------------------------------
# Invariance of the target
# ------------------------------------------------------------------------------------------------

STAY_RUNS = {
    'mala': dict(step_size=0.25),
    'hmc': dict(step_size=0.3, num_leapfrog_steps=4),
}
NUM_STAY_CHAINS = 20000


def _run_from_target(kernel, **options):
    rng = np.random.default_rng(6)
    start = _mixture_draws(rng, NUM_STAY_CHAINS)
    fresh = _mixture_draws(rng, NUM_STAY_CHAINS)
    result = hmc.sample(jax.random.key(7), _mixture_potential, jnp.asarray(start)[:, None],
                        kernel=kernel, num_steps=20, **options)
    return start, fresh, result


@pytest.mark.parametrize('kernel', sorted(STAY_RUNS))
def test_started_at_target_stays_there(kernel):
    start, fresh, result = _run_from_target(kernel, **STAY_RUNS[kernel])
    final = np.asarray(result.position[:, 0])
    # Two-sample Kolmogorov-Smirnov test of the final states against fresh exact draws: under the
    # null (the kernel leaves the target invariant) p is uniform, so p < 1e-4 has probability 1e-4.
    assert scipy.stats.ks_2samp(final, fresh).pvalue > 1e-4
    # Not vacuous: the chains moved (a frozen chain would trivially stay at the target).
    assert 0.3 < float(result.acceptance_rate.mean()) < 0.99
    assert np.mean(np.abs(final - start)) > 0.3


def test_two_sample_test_detects_ula_bias():
    # The same check has the power to see an unadjusted kernel's bias at this step size.
    _, fresh, result = _run_from_target('ula', **STAY_RUNS['mala'])
    assert scipy.stats.ks_2samp(np.asarray(result.position[:, 0]), fresh).pvalue < 1e-6


# ------------------------------------------------------------------------------------------------
# Gradient caching after rejections
# ------------------------------------------------------------------------------------------------


def _quartic(z):
    return jnp.sum(0.25 * z**4 + 0.5 * z**2 + 0.3 * z, axis=1)


@pytest.mark.parametrize('kernel', ['hmc', 'mala'])
def test_rejected_step_keeps_point_and_its_gradient(kernel):
    built = hmc.build_kernel(kernel, _quartic, num_leapfrog_steps=3)
    mcmc = hmc.Kernel(jax.jit(built.init), jax.jit(built.step))
    chains = 64
    keys = hmc.chain_keys(jax.random.key(8), chains)
    start = jax.random.normal(jax.random.key(9), (chains, 3))
    fresh = mcmc.init(start, None)
    # A huge step throws the proposal where the quartic is astronomically large: forced rejection.
    rejected, info = mcmc.step(fresh, jnp.full((chains,), 50.0), *hmc.draw_noise(keys, 0, start))
    assert not np.any(np.asarray(info.accepted))
    expected_grad = jax.grad(lambda z: jnp.sum(_quartic(z)))(start)
    np.testing.assert_array_equal(rejected.position, start)
    # The state keeps the old point's own potential and gradient (bitwise: the cached values) ...
    np.testing.assert_array_equal(rejected.potential, fresh.potential)
    np.testing.assert_array_equal(rejected.grad, fresh.grad)
    # ... which are those of the old point (computed afresh, up to float rounding).
    np.testing.assert_allclose(rejected.potential, _quartic(start), rtol=1e-6)
    np.testing.assert_allclose(rejected.grad, expected_grad, rtol=1e-6, atol=1e-6)
    # The next step from the rejected state is the step from a fresh state at the same point.
    noise = hmc.draw_noise(keys, 1, start)
    small = jnp.full((chains,), 0.1)
    after_rejection, info_a = mcmc.step(rejected, small, *noise)
    from_fresh, _ = mcmc.step(fresh, small, *noise)
    assert np.mean(np.asarray(info_a.accepted)) > 0.5  # the comparison involves real moves
    for a, b in zip(jax.tree.leaves(after_rejection), jax.tree.leaves(from_fresh)):
        np.testing.assert_array_equal(a, b)
    # And the cached gradient always belongs to the cached position.
    np.testing.assert_allclose(after_rejection.grad,
                               jax.grad(lambda z: jnp.sum(_quartic(z)))(after_rejection.position),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Reproducibility and transformations
# ------------------------------------------------------------------------------------------------

KERNEL_OPTIONS = {
    'ula': dict(step_size=0.1),
    'mala': dict(step_size=0.3),
    'hmc': dict(step_size=0.2, num_leapfrog_steps=2),
    'kla': dict(step_size=0.3, friction=0.5),
    'imh': dict(),
}
NUM_TRANSFORM_CHAINS = 16


def _transform_setup():
    mean, cov = _gaussian_10d()
    potential = _gaussian_potential(mean, cov)
    start = jax.random.normal(jax.random.key(10), (NUM_TRANSFORM_CHAINS, DIM))
    return potential, start


def _assert_same_result(a, b, exact=False):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel', sorted(KERNEL_OPTIONS))
def test_same_key_same_result_under_jit_vmap_and_shard_map(kernel):
    potential, start = _transform_setup()
    options = dict(kernel=kernel, num_steps=12, thin=4, **KERNEL_OPTIONS[kernel])
    key = jax.random.key(11)
    plain = hmc.sample(key, potential, start, **options)
    run = jax.jit(lambda k, z: hmc.sample(k, potential, z, **options))
    jitted = run(key, start)
    _assert_same_result(plain, jitted)
    # Same key, same inputs: bitwise the same. A different key: a different path.
    _assert_same_result(jitted, run(key, start), exact=True)
    assert not np.allclose(run(jax.random.key(12), start).position, plain.position)

    # vmap over two independent groups of chains equals separate calls.
    other_key, other_start = jax.random.key(13), -0.5 * start
    vmapped = jax.vmap(run)(jnp.stack([key, other_key]), jnp.stack([start, other_start]))
    _assert_same_result(plain, jax.tree.map(lambda x: x[0], vmapped))
    _assert_same_result(run(other_key, other_start), jax.tree.map(lambda x: x[1], vmapped))

    # Chains split over 4 devices, each with its per-chain key, give the plain call's samples
    # (a single key is shorthand for the per-chain keys of chain_keys).
    keys = hmc.chain_keys(key, NUM_TRANSFORM_CHAINS)
    mesh = Mesh(np.array(jax.devices()[:4]), ('chains',))
    chain_spec = P('chains')
    steps_first = P(None, 'chains')
    out_specs = hmc.SampleResult(
        position=chain_spec, potential=chain_spec, acceptance_rate=chain_spec,
        num_nonfinite=chain_spec, step_size=None if kernel == 'imh' else chain_spec,
        trace=steps_first, trace_potential=steps_first, trace_acceptance=steps_first)
    sharded = jax.jit(jax.shard_map(
        lambda k, z: hmc.sample(k, potential, z, **options), mesh=mesh,
        in_specs=(chain_spec, chain_spec), out_specs=out_specs))(keys, start)
    _assert_same_result(plain, sharded)


def test_sample_inside_a_user_scan_matches_sequential_calls():
    potential, start = _transform_setup()
    options = dict(kernel='mala', num_steps=10, step_size=0.3)
    # Inside a user's lax.scan: two rounds of sampling, each continuing from the last.
    round_keys = jax.random.split(jax.random.key(15), 2)
    one_round = jax.jit(lambda z, k: (hmc.sample(k, potential, z, **options).position, None))
    scanned, _ = jax.lax.scan(one_round, start, round_keys)
    z = start
    for k in round_keys:
        z, _ = one_round(z, k)
    np.testing.assert_allclose(scanned, z, rtol=1e-5, atol=1e-5)


def test_positions_with_trailing_shape():
    # Chains of (2, 5) arrays behave exactly like chains of 10-vectors.
    potential, start = _transform_setup()
    flat = hmc.sample(jax.random.key(16), potential, start, kernel='mala', num_steps=10,
                      step_size=0.3)
    shaped = hmc.sample(jax.random.key(16), lambda z: potential(z.reshape(z.shape[0], -1)),
                        start.reshape(-1, 2, 5), kernel='mala', num_steps=10, step_size=0.3)
    assert shaped.position.shape == (NUM_TRANSFORM_CHAINS, 2, 5)
    np.testing.assert_allclose(shaped.position.reshape(start.shape), flat.position, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(shaped.acceptance_rate, flat.acceptance_rate)


def test_adaptation_under_shard_map_is_shared_across_devices():
    potential, start = _transform_setup()
    options = dict(kernel='hmc', num_steps=5, step_size=0.05, num_leapfrog_steps=2,
                   num_adaptation_steps=20)
    keys = hmc.chain_keys(jax.random.key(17), NUM_TRANSFORM_CHAINS)
    plain = hmc.sample(keys, potential, start, **options)
    mesh = Mesh(np.array(jax.devices()[:4]), ('chains',))
    spec = P('chains')
    out_specs = hmc.SampleResult(spec, spec, spec, spec, spec)
    sharded = jax.jit(jax.shard_map(
        lambda k, z: hmc.sample(k, potential, z, axis_name='chains', **options), mesh=mesh,
        in_specs=(spec, spec), out_specs=out_specs))(keys, start)
    _assert_same_result(plain, sharded)
    assert float(plain.step_size[0]) != 0.05  # adaptation did change the step size


# ------------------------------------------------------------------------------------------------
# Non-finite proposals
# ------------------------------------------------------------------------------------------------

WALL = 1.0


def _nan_beyond_wall(z):
    """Standard normal potential whose value is NaN for z > WALL."""
    x = z[:, 0]
    return jnp.where(x > WALL, jnp.nan, 0.5 * x * x)


def _nan_gradient_beyond_wall(z):
    """Finite value everywhere, but the gradient is NaN for z > WALL (sqrt of a negative)."""
    x = z[:, 0]
    return 0.5 * x * x + jnp.where(x > WALL, 0.0, 0.0 * jnp.sqrt(WALL - x))


@pytest.mark.parametrize('kernel', sorted(KERNEL_OPTIONS))
@pytest.mark.parametrize('potential', [_nan_beyond_wall, _nan_gradient_beyond_wall],
                         ids=['nan_value', 'nan_gradient'])
def test_nonfinite_proposals_are_rejected_and_counted(kernel, potential):
    if kernel == 'imh' and potential is _nan_gradient_beyond_wall:
        pytest.skip('IMH uses no gradient')
    x = potential(jnp.array([[WALL + 0.5]]))
    g = jax.grad(lambda z: jnp.sum(potential(z)))(jnp.array([[WALL + 0.5]]))
    assert not (np.isfinite(x).all() and np.isfinite(g).all())  # the wall is really there
    options = dict(KERNEL_OPTIONS[kernel])
    if 'step_size' in options:
        options['step_size'] = 0.5
    result = hmc.sample(jax.random.key(18), potential, jnp.zeros((256, 1)), kernel=kernel,
                        num_steps=40, thin=1, **options)
    assert np.all(np.isfinite(result.trace)) and np.all(np.isfinite(result.position))
    assert np.all(np.isfinite(result.trace_potential))
    assert np.all(np.asarray(result.trace) <= WALL)   # never beyond the wall
    assert int(result.num_nonfinite.sum()) > 0         # proposals did hit it, and were counted
    # Counted rejections are rejections: the acceptance rate is at most 1 - nonfinite / steps.
    assert np.all(np.asarray(result.acceptance_rate)
                  <= 1 - np.asarray(result.num_nonfinite) / 40 + 1e-6)


# ------------------------------------------------------------------------------------------------
# Convolution kernels laid out for XLA:CPU loops (the rewrite itself: tests/test_xla_cpu.py)
# ------------------------------------------------------------------------------------------------



def test_sampling_with_hwio_convolutions_matches_without_also_under_shard_map():
    chains = 8
    start = jax.random.normal(jax.random.key(26), (chains, 32))
    keys = hmc.chain_keys(jax.random.key(27), chains)
    options = dict(kernel='mala', num_steps=5, step_size=0.1)
    reference = hmc.sample(keys, conv_potential, start, hwio_convolutions=False, **options)
    assert 0 < float(reference.acceptance_rate.mean()) < 1
    run = lambda k, z: hmc.sample(k, conv_potential, z, hwio_convolutions=True, **options)
    _assert_same_result(reference, run(keys, start))
    mesh = Mesh(np.array(jax.devices()[:4]), ('chains',))
    spec = P('chains')
    sharded = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(spec, spec),
                                    out_specs=hmc.SampleResult(spec, spec, spec, spec, spec)))
    _assert_same_result(reference, sharded(keys, start))


# ------------------------------------------------------------------------------------------------
# Noise
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
def test_draw_noise_is_standard_and_fresh_every_step(impl):
    # threefry uses the direct counter path, rbg the generic fold_in path.
    chains, dims = 2048, 8
    keys = hmc.chain_keys(jax.random.key(22, impl=impl), chains)
    like = jnp.zeros((chains, dims))
    normal0, uniform0 = hmc.draw_noise(keys, 0, like)
    normal1, uniform1 = hmc.draw_noise(keys, 1, like)
    assert normal0.shape == like.shape and uniform0.shape == (chains,)
    # KS tests against the exact laws (p < 1e-4 has probability 1e-4 under the null).
    assert scipy.stats.kstest(np.ravel(normal0), 'norm').pvalue > 1e-4
    assert scipy.stats.kstest(np.asarray(uniform0), 'uniform').pvalue > 1e-4
    assert np.all((np.asarray(uniform0) > 0) & (np.asarray(uniform0) < 1))
    # Coordinates, chains and steps are uncorrelated: each sample correlation of n independent
    # pairs has SE 1/sqrt(n).
    pairs = [(normal0[:, 0], normal0[:, 1]), (normal0[:-1, 0], normal0[1:, 0]),
             (normal0[:, 0], normal1[:, 0]), (uniform0, uniform1)]
    for a, b in pairs:
        corr = np.corrcoef(np.asarray(a), np.asarray(b))[0, 1]
        _check_within_mc_error(corr, 0.0, 1 / np.sqrt(a.shape[0]), 'noise correlation')
    # The same key and step give the same noise.
    np.testing.assert_array_equal(hmc.draw_noise(keys, 1, like)[0], normal1)


# ------------------------------------------------------------------------------------------------
# Step-size schedules
# ------------------------------------------------------------------------------------------------


def test_decay_schedule_reaches_the_decayed_stationary_variance():
    # The authors' recipe: multiply the step by 0.5 every 100 steps. After 2 decays h = 4 -> 1,
    # and ULA's variance is that of h = 1 (2.667 for v = 2), not that of the initial h = 4 (which
    # is unstable) nor v itself.
    variance, chains = 2.0, 2048
    options = dict(kernel='ula', num_steps=300, step_size=3.2, decay_factor=0.5, decay_every=100,
                   thin=1)
    result = hmc.sample(jax.random.key(19), _quadratic_1d(variance), jnp.zeros((chains, 1)),
                        **options)
    np.testing.assert_allclose(result.step_size, 0.8, rtol=1e-6)
    # The last 100 steps ran at h = 0.8; after 50 of them (0.6^50 ~ 1e-11) they are stationary.
    est, se = _chain_mean_and_se((np.asarray(result.trace[250:, :, 0], np.float64) ** 2).mean(0))
    _check_within_mc_error(est, _ula_stationary_variance(0.8, variance), se, 'decayed ULA')
    # The same multiplier given as a callable gives the same chains.
    callable_result = hmc.sample(
        jax.random.key(19), _quadratic_1d(variance), jnp.zeros((chains, 1)),
        **{**options, 'decay_factor': None, 'decay_every': None,
           'step_size_schedule': lambda t: 0.5 ** (t // 100)})
    _assert_same_result(result, callable_result)


# ------------------------------------------------------------------------------------------------
# Diagnostics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('rho', [0.5, -0.3])
def test_effective_sample_size_of_ar1(rho):
    steps, chains, dims = 2000, 128, 4
    rng = np.random.default_rng(20)
    x = np.empty((steps, chains, dims))
    x[0] = rng.normal(size=(chains, dims))
    noise = rng.normal(size=(steps, chains, dims)) * np.sqrt(1 - rho**2)
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + noise[t]
    ratio = np.asarray(hmc.effective_sample_size(jnp.asarray(x, jnp.float32))) / (steps * chains)
    exact = (1 - rho) / (1 + rho)
    # Sokal's variance of an integrated autocorrelation time summed over a window of M lags:
    # var(tau_hat) / tau^2 ~ 2 (2M + 1) / N. Geyer's sequence stops once rho^k is lost in noise
    # (~ 1/sqrt(N) = 0.002), so M <= 2 * 10 lags here; the relative SE is then
    # sqrt(2 * 41 / 256000) = 0.018, and Z_TOL * SE = 8%. Each of the `dims` columns is checked.
    rel_se = np.sqrt(2 * 41 / (steps * chains))
    _check_within_mc_error(ratio / exact, 1.0, rel_se, f'ESS ratio for rho={rho}')


def test_trace_and_diagnostic_helpers_are_consistent():
    potential, start = _transform_setup()
    result = hmc.sample(jax.random.key(21), potential, start, kernel='mala', num_steps=30,
                        step_size=0.3, thin=3)
    assert result.trace.shape == (10, NUM_TRANSFORM_CHAINS, DIM)
    np.testing.assert_array_equal(result.trace[-1], result.position)
    np.testing.assert_allclose(result.trace_potential, jax.vmap(potential)(result.trace),
                               rtol=1e-6)
    # Acceptance fractions per block of 3 steps average to the per-chain acceptance rate.
    np.testing.assert_allclose(result.trace_acceptance.mean(0), result.acceptance_rate, rtol=1e-6)
    assert set(np.unique(np.asarray(result.trace_acceptance) * 3)) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_allclose(hmc.potential_trace(result), result.trace_potential.mean(1))
    np.testing.assert_allclose(hmc.acceptance_per_step(result), result.trace_acceptance.mean(1))
    # A remainder that does not fill a block still runs: 31 steps give 10 traced blocks.
    longer = hmc.sample(jax.random.key(21), potential, start, kernel='mala', num_steps=31,
                        step_size=0.3, thin=3)
    assert longer.trace.shape[0] == 10
    np.testing.assert_array_equal(longer.trace, result.trace)
    assert not np.allclose(longer.position, result.position)
    untraced = hmc.sample(jax.random.key(21), potential, start, kernel='mala', num_steps=30,
                          step_size=0.3)
    assert untraced.trace is None
    with pytest.raises(ValueError, match='thin'):
        hmc.potential_trace(untraced)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('options, match', [
    (dict(kernel='nuts', step_size=0.1), 'kernel'),
    (dict(kernel='mala'), 'step_size'),
    (dict(kernel='mala', step_size=-1.0), 'step_size'),
    (dict(kernel='mala', step_size=jnp.ones(3)), 'step_size'),
    (dict(kernel='ula', step_size=0.1, num_adaptation_steps=10), 'num_adaptation_steps'),
    (dict(kernel='mala', step_size=0.1, thin=0), 'thin'),
    (dict(kernel='mala', step_size=0.1, unroll=0), 'unroll'),
    (dict(kernel='hmc', step_size=0.1, num_leapfrog_steps=0), 'num_leapfrog_steps'),
    (dict(kernel='kla', step_size=0.1, friction=0.0), 'friction'),
    (dict(kernel='mala', step_size=0.1, target_acceptance=1.5), 'target_acceptance'),
    (dict(kernel='ula', step_size=0.1, decay_factor=0.5), 'decay_every'),
    (dict(kernel='ula', step_size=0.1, step_size_schedule='linear'), 'step_size_schedule'),
])
def test_bad_input_raises_value_error_naming_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        hmc.sample(jax.random.key(0), _quadratic_1d(1.0), jnp.zeros((4, 2)), num_steps=2,
                   **options)


def test_potential_with_wrong_output_shape_is_rejected():
    with pytest.raises(ValueError, match='potential_fn'):
        hmc.sample(jax.random.key(0), lambda z: jnp.sum(z), jnp.zeros((4, 2)), kernel='mala',
                   num_steps=2, step_size=0.1)


# ------------------------------------------------------------------------------------------------
# Results recorded before the kernels moved to kale_jax.mcmc
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def recorded():
    with np.load(hmc_reference.PATH) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.parametrize('case', sorted(hmc_reference.CASES))
def test_results_match_those_recorded_before_the_mcmc_split(case, recorded):
    # tests/hmc_reference.py recorded these with the monolithic hmc.py (commit aa35fc8); on the
    # machine that recorded them the new code reproduced every array bitwise. The float
    # comparison allows float32 round-off (rtol 1e-5) only because another CPU (AVX2 vs AVX-512)
    # may compile reductions and erf_inv in a different order; counts and accept decisions must
    # match exactly.
    ours = hmc_reference.run_case(hmc.sample, case)
    fields = {name.split('/')[1] for name in recorded if name.startswith(case + '/')}
    assert set(ours) == fields
    for field, value in ours.items():
        expected = recorded[f'{case}/{field}']
        assert value.shape == expected.shape and value.dtype == expected.dtype, field
        if field in ('num_nonfinite', 'acceptance_rate', 'trace_acceptance'):
            np.testing.assert_array_equal(value, expected, err_msg=f'{case}/{field}')
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6,
                                       err_msg=f'{case}/{field}')
