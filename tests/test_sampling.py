"""Tests of kale_jax.sampling: chunked, device-sharded GEBM sampling with records along the chain."""
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
    assert base.samples.shape == (1, 4, DIM)
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
    with pytest.raises(ValueError, match="kernel must be one of"):
        sampling.SamplerSpec("langevin", 5, 0.1).validate()
    with pytest.raises(ValueError, match="step_size"):
        sampling.SamplerSpec("kla", 5).validate()
    spec = SPEC.with_options(friction=None, num_adaptation_steps=3)
    assert spec.options == (("num_adaptation_steps", 3),)
