"""Tests of kale_jax.mcmc: the shared pieces, the registry, and a kernel added from a test file.

Statistical tolerances as in tests/test_hmc.py: an estimate is a mean over independent chains of
per-chain time averages, whose standard error (SE) is their sample standard deviation /
sqrt(chains) whatever the autocorrelation inside a chain; |estimate - truth| <= 4.5 SE fails with
probability 6.8e-6 per comparison for a correct sampler. Seeds are fixed.
"""
from typing import NamedTuple

import numpy as np
import pytest
import scipy.stats
import jax
import jax.numpy as jnp

from kale_jax import hmc, mcmc
from kale_jax.mcmc import noise, proposals, run, step_size

Z_TOL = 4.5


# ------------------------------------------------------------------------------------------------
# A kernel defined here, registered, and run through the library's loop and adaptation
# ------------------------------------------------------------------------------------------------


class RWMState(NamedTuple):
    position: jax.Array   # (chains, ...)
    potential: jax.Array  # (chains,)


class RWMInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_nonfinite: jax.Array


def rwm_init(position, potential_fn, key=None):
    del key
    return RWMState(position, potential_fn(position))


def rwm_build_kernel():
    """Random-walk Metropolis z' = z + s xi, drawing with plain jax.random from the step's keys."""

    def kernel(key, state, potential_fn, step_size):
        z = state.position

        def draws(k):
            k_normal, k_uniform = jax.random.split(k)
            return (jax.random.normal(k_normal, z.shape[1:], z.dtype),
                    jax.random.uniform(k_uniform, (), z.dtype, minval=1e-30))

        xi, uniform = jax.vmap(draws)(noise.fold_in(key))
        z_new = z + proposals.per_chain(step_size, z) * xi
        u_new = potential_fn(z_new)
        finite = jnp.isfinite(u_new)
        accepted, prob = proposals.mh_accept(uniform, state.potential - u_new, finite, z.dtype)
        new_state = proposals.select(accepted, RWMState(z_new, u_new), state)
        return new_state, RWMInfo(prob, accepted, ~finite)

    return kernel


RWM_TARGET_ACCEPTANCE = 0.44  # the 1-D optimum of Roberts & Rosenthal (2001)


@pytest.fixture
def rwm():
    mcmc.register('rwm', mcmc.KernelSpec(rwm_init, rwm_build_kernel, uses_gradient=False,
                                         step_size_adaptation=True,
                                         target_acceptance=RWM_TARGET_ACCEPTANCE))
    yield 'rwm'
    mcmc.unregister('rwm')


GAUSS_MEAN = np.array([1.0, -2.0])
GAUSS_SD = np.array([0.5, 1.5])


def _gaussian(z):
    return jnp.sum(0.5 * ((z - GAUSS_MEAN) / GAUSS_SD) ** 2, axis=1)


def test_registered_toy_kernel_samples_a_gaussian_with_adaptation(rwm):
    chains, kept = 512, 300
    start = jax.random.normal(jax.random.key(30), (chains, 2))
    # The 200 warm-up steps adapt the step and burn in (the start is 2 SDs off in coordinate 1).
    result = jax.jit(lambda k, z: hmc.sample(
        k, _gaussian, z, kernel=rwm, num_steps=kept, step_size=0.05, num_adaptation_steps=200,
        thin=1))(jax.random.key(31), start)
    draws = np.asarray(result.trace, np.float64)                     # (kept, chains, 2)
    for name, per_chain, truth in (
            ('mean', draws.mean(0), GAUSS_MEAN),
            ('variance', ((draws - GAUSS_MEAN) ** 2).mean(0), GAUSS_SD ** 2)):
        est = per_chain.mean(0)
        se = per_chain.std(0, ddof=1) / np.sqrt(chains)
        assert np.all(np.abs(est - truth) <= Z_TOL * se), (name, est, truth, se)
        # Power: the band is under 10% of each true variance / SD.
        assert np.all(Z_TOL * se < 0.1 * GAUSS_SD ** (2 if name == 'variance' else 1)), name
    # Adaptation moved the step from the poor 0.05 toward the target rate; 0.05 is an algorithmic
    # tolerance (dual averaging freezes an average of noisy iterates; as for MALA in
    # tests/test_hmc.py), far above the rate's Monte-Carlo error (SE ~ 0.002).
    assert abs(float(result.acceptance_rate.mean()) - RWM_TARGET_ACCEPTANCE) < 0.05
    assert float(result.step_size[0]) > 0.5
    assert int(result.num_nonfinite.sum()) == 0


def test_a_registered_kernel_passes_the_sampler_config_checks(rwm):
    """SamplerSpec (config.sampler) reads the registry when it validates, not a list frozen at
    import: the toy kernel and its adaptation are accepted, an unknown name is refused."""
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    spec = sampling.SamplerSpec(kernel=rwm, num_steps=4, step_size=0.1).with_options(
        num_adaptation_steps=2)
    spec.validate("config.sampler")
    assert dict(spec.with_kernel(rwm).options) == {"num_adaptation_steps": 2}
    assert mcmc.adaptive_names() == ('mala', 'hmc', rwm)
    with pytest.raises(ValueError, match=r"config.sampler.kernel='nuts' is not one of .*'rwm'"):
        sampling.SamplerSpec(kernel="nuts", num_steps=4, step_size=0.1).validate("config.sampler")


def test_registry_lists_the_builtin_kernels_and_their_needs():
    assert mcmc.names()[:5] == ('ula', 'mala', 'hmc', 'kla', 'imh')
    assert hmc.KERNELS == ('ula', 'mala', 'hmc', 'kla', 'imh')
    assert hmc.ADAPTIVE_KERNELS == ('mala', 'hmc')
    assert [mcmc.get(k).uses_gradient for k in hmc.KERNELS] == [True, True, True, True, False]
    assert not mcmc.get('imh').uses_step_size
    assert mcmc.get('hmc').options == ('num_leapfrog_steps',)
    assert mcmc.get('kla').options == ('friction',)


def test_registry_rejects_bad_registrations_and_unknown_names(rwm):
    spec = mcmc.get(rwm)
    with pytest.raises(ValueError, match='already registered'):
        mcmc.register(rwm, spec)
    mcmc.register(rwm, spec, replace=True)
    with pytest.raises(ValueError, match='target_acceptance'):
        mcmc.register('bad', spec._replace(target_acceptance=None))
    with pytest.raises(ValueError, match='uses_step_size'):
        mcmc.register('bad', spec._replace(uses_step_size=False))
    assert 'bad' not in mcmc.names()
    with pytest.raises(ValueError, match=r"kernel: got 'nuts', expected one of .*'rwm'"):
        mcmc.get('nuts')


def test_unregistered_kernel_is_unknown_to_sample(rwm):
    mcmc.unregister(rwm)
    try:
        with pytest.raises(ValueError, match='kernel'):
            hmc.sample(jax.random.key(0), _gaussian, jnp.zeros((2, 2)), kernel=rwm, num_steps=1,
                       step_size=0.1)
    finally:
        mcmc.register(rwm, mcmc.KernelSpec(rwm_init, rwm_build_kernel, uses_gradient=False))


# ------------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------------


def test_langevin_log_density_is_the_gaussian_proposal_up_to_a_constant():
    rng = np.random.default_rng(32)
    start, grad, a, b = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(4))
    s = np.array([0.1, 0.3, 0.7, 1.5], np.float32)
    ours = (proposals.langevin_log_density(a, start, grad, s)
            - proposals.langevin_log_density(b, start, grad, s))
    mean = start - s[:, None] * grad
    sd = np.sqrt(2 * s)[:, None]
    exact = (scipy.stats.norm.logpdf(a, mean, sd).sum(1)
             - scipy.stats.norm.logpdf(b, mean, sd).sum(1))
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-5)


def test_mh_accept_rejects_nonfinite_and_nan_ratios():
    uniform = jnp.array([0.5, 0.5, 0.5, 0.5, 0.9])
    log_ratio = jnp.array([jnp.nan, 5.0, 1.0, jnp.log(0.6), jnp.log(0.6)])
    finite = jnp.array([True, False, True, True, True])
    accepted, prob = proposals.mh_accept(uniform, log_ratio, finite, jnp.float32)
    np.testing.assert_array_equal(accepted, [False, False, True, True, False])
    np.testing.assert_allclose(prob, [0.0, 0.0, 1.0, 0.6, 0.6], rtol=1e-6)


def _only_at(z0):
    """A potential finite only at the point z0 (NaN elsewhere), with gradient z0 + 0.3 there."""

    def potential(z):
        u = jnp.sum(0.5 * z * z + 0.3 * z, axis=1)
        return jnp.where(jnp.all(z == z0, axis=1), u, jnp.nan)

    return potential


@pytest.mark.parametrize('name', ['ula', 'mala', 'hmc', 'kla', 'imh'])
def test_nonfinite_proposals_keep_the_last_state_and_its_gradient(name):
    chains = 64
    z0 = jax.random.normal(jax.random.key(33), (chains, 3))
    potential = _only_at(z0)
    spec = mcmc.get(name)
    keys = noise.chain_keys(jax.random.key(34), chains)
    state = spec.init(z0, potential, noise.step_key(keys, noise.INIT_STEP))
    kernel = spec.build_kernel()
    new_state, info = jax.jit(lambda s: kernel(noise.step_key(keys, 0), s, potential,
                                               jnp.full((chains,), 0.5)))(state)
    assert np.all(np.asarray(info.is_nonfinite)) and not np.any(np.asarray(info.is_accepted))
    for kept, old in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(kept, old)   # bitwise the last finite state
    if spec.uses_gradient:
        np.testing.assert_allclose(new_state.grad, z0 + 0.3, rtol=1e-6)  # the kept point's own


def test_dual_averaging_reaches_the_target_of_a_known_acceptance_curve():
    # Acceptance exp(-eps) for step eps = 0.1 * multiplier: the target 0.6 is reached at
    # eps = -log 0.6, i.e. multiplier 5.108. Deterministic feedback, so no Monte-Carlo error;
    # the tolerance bounds the averaging's own lag after 1000 updates (measured 0.19%).
    adaptation = step_size.dual_averaging(0.6)

    def update(state, _):
        eps = 0.1 * jnp.exp(state.log_factor)
        return adaptation.update(state, jnp.exp(-eps)), None

    state, _ = jax.lax.scan(update, adaptation.init(), None, length=1000)
    np.testing.assert_allclose(float(adaptation.final(state)), -np.log(0.6) / 0.1, rtol=0.005)
    # A kernel that accepts everything cannot push the multiplier past exp(30).
    always, _ = jax.lax.scan(lambda s, _: (adaptation.update(s, 1.0), None), adaptation.init(),
                             None, length=200)
    assert float(always.log_factor) == pytest.approx(step_size.MAX_LOG_FACTOR)
    assert np.isfinite(float(adaptation.final(always)))


# ------------------------------------------------------------------------------------------------
# Randomness: per-chain keys folded with the step index
# ------------------------------------------------------------------------------------------------


def test_a_chains_path_does_not_depend_on_the_other_chains():
    chains = 6
    keys = noise.chain_keys(jax.random.key(35), chains)
    start = jax.random.normal(jax.random.key(36), (chains, 4))
    potential = lambda z: jnp.sum(0.5 * z**2 + 0.1 * z**4, axis=1)
    spec = mcmc.get('mala')

    def chain_run(keys, z):
        state = spec.init(z, potential)
        counts, trace = run.run(spec.build_kernel(), state, potential, keys,
                                jnp.full(z.shape[:1], 0.3), 12, first_step=5, thin=4)
        return counts.state.position, trace.position, counts.num_accepted

    everything = jax.jit(chain_run)(keys, start)
    some = jax.jit(chain_run)(keys[2:5], start[2:5])
    for whole, part in zip(everything, some):
        np.testing.assert_allclose(whole[..., 2:5, :] if whole.ndim == 3 else whole[2:5], part,
                                   rtol=1e-6, atol=1e-6)
    assert 0 < float(everything[2].mean()) < 12


def test_step_keys_draw_fresh_reproducible_noise():
    keys = noise.chain_keys(jax.random.key(37), 4)
    like = jnp.zeros((4, 3))
    a = noise.normal_and_uniform(noise.step_key(keys, 7), like)
    np.testing.assert_array_equal(a[0], noise.draw_noise(keys, 7, like)[0])
    np.testing.assert_array_equal(a[0], noise.normal(noise.step_key(keys, 7), like))
    assert not np.allclose(a[0], noise.normal(noise.step_key(keys, 8), like))
    # fold_in gives one plain key per chain and step, different across steps and chains.
    folded = jax.random.key_data(noise.fold_in(noise.step_key(keys, 7)))
    assert folded.shape == (4, 2) and len({tuple(k) for k in np.asarray(folded)}) == 4
    assert not np.array_equal(folded,
                              jax.random.key_data(noise.fold_in(noise.step_key(keys, 8))))
    with pytest.raises(ValueError, match='step_index'):
        noise.step_key(keys, -1)
