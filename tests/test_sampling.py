"""Tests of kale_jax.sampling: chunked, device-sharded GEBM sampling with records along the chain."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kale_jax import hmc, latent, networks, sampling

LATENT, DIM = 3, 2


@pytest.fixture(scope="module")
def gebm():
    generator = networks.get_generator("mlp", output_dim=DIM, hidden=8, depth=1, batch_norm=True)
    energy = networks.get_energy("mlp", hidden=8, depth=1)
    kg, ke = jax.random.split(jax.random.PRNGKey(0))
    g_vars = networks.init_variables(generator, kg, jnp.zeros((1, LATENT)))
    e_vars = networks.init_variables(energy, ke, jnp.zeros((1, DIM)))
    return sampling.Model(generator, energy, LATENT), g_vars, e_vars


SPEC = sampling.SamplerSpec(kernel="mala", num_steps=6, step_size=0.1, beta=2.0, record_every=2)


def test_records_and_chain_paths_match_hmc_sample_and_ignore_chunking(gebm):
    model, g_vars, e_vars = gebm
    key = jax.random.PRNGKey(7)
    num = 10  # not a multiple of the chunk: the last chunk is padded and trimmed
    four = sampling.Sampler(model, SPEC, chunk_size=8)  # 4 forced devices, 2 chains each
    assert len(four.devices) == 4
    chunks = list(four.chunks(key, g_vars, e_vars, num))
    assert [c.start for c in chunks] == [0, 8]
    drawn = four.draw(key, g_vars, e_vars, num)
    np.testing.assert_array_equal(drawn.steps, [0, 2, 4, 6])
    assert drawn.samples.shape == (4, num, DIM)
    assert drawn.energy.shape == drawn.acceptance.shape == (4, num)
    assert drawn.num_nonfinite.shape == (num,)
    assert np.all(np.isnan(drawn.acceptance[0]))
    assert np.all((drawn.acceptance[1:] >= 0) & (drawn.acceptance[1:] <= 1))
    assert drawn.acceptance[1:].mean() > 0.3  # MALA moves with this small step

    # One device, chunks of 5: the same chains (a chain's key is fold_in(key, global index)).
    one = sampling.Sampler(model, SPEC, chunk_size=5, devices=jax.devices()[:1])
    again = one.draw(key, g_vars, e_vars, num)
    np.testing.assert_allclose(again.samples, drawn.samples, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.acceptance, drawn.acceptance)
    np.testing.assert_allclose(drawn.step_size, 0.1, rtol=1e-6)  # no adaptation: the given one

    # The wiring against kale_jax.hmc.sample called directly with the documented keys and starts.
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    z0 = jax.vmap(lambda k: jax.random.normal(
        jax.random.fold_in(k, sampling._START_STREAM), (LATENT,)))(keys)
    potential = latent.potential(model.generator, model.energy, g_vars, e_vars, beta=SPEC.beta)
    result = hmc.sample(keys, potential, z0, kernel="mala", num_steps=6, step_size=0.1, thin=2)
    generate = latent.generator_fn(model.generator, g_vars)
    energy = latent.energy_fn(model.energy, e_vars)
    np.testing.assert_allclose(drawn.samples[0], generate(z0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(drawn.samples[1:], jax.vmap(generate)(result.trace),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(drawn.energy, energy(drawn.samples.reshape(-1, DIM)).reshape(4, num),
                               rtol=1e-4, atol=1e-5)


def test_base_only_and_ends_only(gebm):
    model, g_vars, e_vars = gebm
    key = jax.random.PRNGKey(1)
    base = sampling.Sampler(model, sampling.SamplerSpec(kernel="ula", num_steps=0, step_size=0.1),
                            chunk_size=4).draw(key, g_vars, e_vars, 4)
    assert base.samples.shape == (1, 4, DIM) and np.all(np.isnan(base.step_size))
    np.testing.assert_array_equal(base.steps, [0])
    ends = sampling.Sampler(model, SPEC, chunk_size=4, record_samples=False).draw(
        key, g_vars, e_vars, 4)
    full = sampling.Sampler(model, SPEC, chunk_size=4).draw(key, g_vars, e_vars, 4)
    assert ends.samples.shape == (2, 4, DIM) and ends.energy.shape == (4, 4)
    np.testing.assert_allclose(ends.samples, full.samples[[0, -1]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(base.samples[0], full.samples[0], rtol=1e-5, atol=1e-6)


def test_bad_arguments_fail_before_compiling(gebm):
    model = gebm[0]
    with pytest.raises(ValueError, match="multiple of the 4 device"):
        sampling.Sampler(model, SPEC, chunk_size=6)
    with pytest.raises(ValueError, match="must divide num_steps"):
        sampling.Sampler(model, sampling.SamplerSpec("ula", 5, 0.1, record_every=2), chunk_size=4)
    with pytest.raises(ValueError, match="kernel='langevin' is not one of"):
        sampling.SamplerSpec("langevin", 5, 0.1).validate()
    with pytest.raises(ValueError, match="step_size"):
        sampling.SamplerSpec("kla", 5).validate()
    spec = SPEC.with_options(friction=None, num_adaptation_steps=3)
    assert spec.options == (("num_adaptation_steps", 3),)


def test_step_size_adaptation_is_shared_over_devices(gebm):
    model, g_vars, e_vars = gebm
    spec = SPEC.with_options(num_adaptation_steps=4)
    drawn = sampling.Sampler(model, spec, chunk_size=8).draw(jax.random.PRNGKey(2), g_vars,
                                                             e_vars, 8)
    # One multiplier for the chunk, averaged over the 4 devices' chains: equal on every chain.
    assert np.all(np.isfinite(drawn.step_size))
    np.testing.assert_allclose(drawn.step_size, drawn.step_size[0], rtol=1e-6)
    assert drawn.step_size[0] != pytest.approx(0.1)


def test_beta_sweep_is_paired_and_beta_zero_samples_the_prior(gebm):
    """Every beta runs the same chains (same keys and starts): record 0, the base samples, is
    identical. At beta = 0, MALA targets N(0, I) exactly and starts there, so every record is
    N(0, I)-distributed and the mean energy of B(z_t) equals the base's. Per chain the paired
    difference d_i = E(B(z_t,i)) - E(B(z_0,i)) has mean 0, so mean(d) ~ N(0, var(d) / n):
    tolerance 4 standard errors (two-sided 6e-5). A large beta must lower the mean energy by more
    than 4 standard errors of the same paired difference."""
    model, g_vars, e_vars = gebm
    spec = sampling.SamplerSpec(kernel="mala", num_steps=20, step_size=0.1, record_every=10)
    sampler = sampling.Sampler(model, spec, chunk_size=256)
    key, n = jax.random.PRNGKey(11), 512
    cold = sampler.draw(key, g_vars, e_vars, n, beta=0.0)
    hot = sampler.draw(key, g_vars, e_vars, n, beta=20.0)
    np.testing.assert_array_equal(cold.samples[0], hot.samples[0])
    np.testing.assert_array_equal(cold.energy[0], hot.energy[0])
    assert not np.allclose(cold.samples[-1], hot.samples[-1])
    for drawn, moves_down in ((cold, False), (hot, True)):
        d = drawn.energy[-1] - drawn.energy[0]
        se = d.std(ddof=1) / np.sqrt(n)
        assert se > 0 and drawn.acceptance[1:].mean() > 0.2  # the chains do move
        if moves_down:
            assert d.mean() < -4 * se, (d.mean(), se)
        else:
            assert abs(d.mean()) < 4 * se, (d.mean(), se)
    # The spec's beta is the default; a bad beta fails before compiling.
    default = sampling.Sampler(model, dataclasses.replace(spec, beta=20.0), chunk_size=256)
    np.testing.assert_array_equal(default.draw(key, g_vars, e_vars, n).samples, hot.samples)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta=.* must be a finite number >= 0"):
            next(sampler.chunks(key, g_vars, e_vars, n, beta=bad))


def test_choose_beta_is_the_validation_optimum():
    betas = (0.01, 1.0, 100.0, 1000.0)
    validation = (0.30, 0.12, 0.05, 0.20)
    assert sampling.choose_beta(betas, validation, "min") == 2
    assert sampling.choose_beta(betas, validation, "max") == 0
    # Missing / non-finite values are skipped; ties go to the first; none finite: None.
    assert sampling.choose_beta(betas, (None, float("nan"), 0.4, float("inf")), "min") == 2
    assert sampling.choose_beta(betas, (0.1, 0.2, 0.1, 0.3), "min") == 0
    assert sampling.choose_beta(betas, (None, float("nan"), None, None), "max") is None
    with pytest.raises(ValueError, match="goal"):
        sampling.choose_beta(betas, validation, "lowest")
    with pytest.raises(ValueError, match="one entry per beta"):
        sampling.choose_beta(betas, validation[:3], "min")


def test_presets_are_valid_sampler_settings():
    """The presets validate as SamplerSpecs, and 'authors_kla' is the authors' LMC mapped onto our
    'kla': their lambda = 1e-4 is a squared half step, h = 2 sqrt(lambda) = 0.02; their friction
    kappa multiplies h in exp(-kappa h) exactly like ours; lambda x 0.1 every 200 steps is h x
    sqrt(0.1)."""
    assert set(sampling.PRESETS) >= {"authors_kla", "adapted_mala"}
    for name, preset in sampling.PRESETS.items():
        spec = sampling.SamplerSpec(kernel=preset["kernel"], num_steps=preset["num_steps"],
                                    step_size=preset["step_size"], beta=preset["beta"])
        spec.validate()
        hmc.build_kernel(preset["kernel"], lambda z: jnp.sum(z**2, axis=-1),
                         friction=preset["friction"])
    kla = sampling.PRESETS["authors_kla"]
    assert kla["kernel"] == "kla" and kla["beta"] == 100.0 and kla["num_steps"] == 1000
    assert kla["step_size"] == pytest.approx(0.02) and kla["friction"] == 0.04
    assert kla["decay_factor"] ** 2 == pytest.approx(0.1) and kla["decay_every"] == 200
    mala = sampling.PRESETS["adapted_mala"]
    assert mala["kernel"] == "mala" and mala["num_adaptation_steps"] > 0
    assert mala["num_steps"] + mala["num_adaptation_steps"] == kla["num_steps"]  # same budget


def test_sample_gebm_is_the_direct_hmc_sample_call(gebm):
    """The one sampling path builds U(z) = |z|^2 / 2 + beta E(B(z)), draws z0 ~ N(0, I) from the
    first half of split(key) and runs hmc.sample with the second half: the same numbers as writing
    it out (what training's evaluation and the claims did before), for given starts too."""
    model, g_vars, e_vars = gebm
    key = jax.random.PRNGKey(3)
    spec = SPEC.with_options(num_adaptation_steps=2)
    z0, result = jax.jit(lambda k: sampling.sample_gebm(k, model, spec, g_vars, e_vars,
                                                        num_chains=6, thin=3))(key)
    key_z, key_mcmc = jax.random.split(key)
    expected_z0 = jax.random.normal(key_z, (6, LATENT), jnp.float32)
    potential = latent.potential(model.generator, model.energy, g_vars, e_vars, beta=SPEC.beta)
    expected = jax.jit(lambda k, z: hmc.sample(k, potential, z, kernel="mala", num_steps=6,
                                               step_size=0.1, num_adaptation_steps=2,
                                               thin=3))(key_mcmc, expected_z0)
    np.testing.assert_array_equal(z0, expected_z0)
    np.testing.assert_allclose(result.position, expected.position, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.trace, expected.trace, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.acceptance_rate, expected.acceptance_rate)
    # Given starts and a beta override (here back to SPEC's): the key goes to the chains unsplit.
    _, given = sampling.sample_gebm(key_mcmc, model, dataclasses.replace(spec, beta=1.0), g_vars,
                                    e_vars, z0=expected_z0, beta=SPEC.beta, thin=3)
    np.testing.assert_allclose(given.position, expected.position, rtol=1e-6, atol=1e-6)


def test_from_config_validates_once_with_the_config_keys():
    from configs import default  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    sampler = default.get_config().sampler
    spec = sampling.from_config(sampler, record_every=100)
    assert (spec.kernel, spec.num_steps, spec.step_size, spec.beta, spec.record_every) == (
        sampler.kernel, sampler.num_steps, sampler.step_size, sampler.beta, 100)
    assert dict(spec.options) == {k: sampler[k] for k in sampling.SAMPLER_OPTIONS
                                  if sampler.get(k) is not None}
    # Adaptation is allowed exactly for hmc.ADAPTIVE_KERNELS.
    for kernel in hmc.KERNELS:
        settings = dict(sampler.to_dict(), kernel=kernel, num_adaptation_steps=5)
        if kernel in hmc.ADAPTIVE_KERNELS:
            sampling.from_config(settings)
        else:
            with pytest.raises(ConfigError, match=r"^config.sampler.num_adaptation_steps=5 needs "
                                                  r"config.sampler.kernel in"):
                sampling.from_config(settings)
    for key, value, allowed in (("num_steps", -1, ">= 0"), ("step_size", 0.0, "> 0"),
                                ("beta", float("inf"), "> 0"), ("unroll", 0, ">= 1"),
                                ("target_acceptance", 1.0, "(0, 1)"),
                                ("decay_factor", 0.5, "give both")):
        with pytest.raises(ConfigError) as error:
            sampling.from_config(dict(sampler.to_dict(), **{key: value}))
        assert str(error.value).startswith(f"config.sampler.{key}={value!r}")
        assert allowed in str(error.value)
    # Another kernel keeps only the options it reads.
    hmc_spec = sampling.from_config(dict(sampler.to_dict(), kernel="hmc", num_leapfrog_steps=3,
                                         friction=0.5))
    assert dict(hmc_spec.with_kernel("kla").options) == {"friction": 0.5}
    assert dict(hmc_spec.with_kernel("mala").options) == {"num_adaptation_steps": 100}
