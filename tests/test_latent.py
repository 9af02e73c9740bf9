"""Tests of kale_jax.latent: the GEBM latent potential U(z) = 0.5|z|^2 + beta E(B(z))."""
import jax
import jax.numpy as jnp
import numpy as np

from kale_jax import kale, latent, networks

LATENT, DIM, CHAINS = 4, 3, 6


def _pair():
    generator = networks.get_generator("mlp", output_dim=DIM, hidden=16, depth=2, batch_norm=True)
    energy = networks.get_energy("mlp", hidden=16, depth=2, spectral_norm=True)
    kg, ke = jax.random.split(jax.random.PRNGKey(0))
    g_vars = networks.init_variables(generator, kg, jnp.zeros((1, LATENT)))
    e_vars = networks.init_variables(energy, ke, jnp.zeros((1, DIM)))
    return generator, energy, g_vars, e_vars


def test_potential_is_prior_plus_beta_times_energy_of_generated_point():
    generator, energy, g_vars, e_vars = _pair()
    z = jax.random.normal(jax.random.PRNGKey(1), (CHAINS, LATENT))
    x = generator.apply(g_vars, z, train=False)
    e = energy.apply(e_vars, x, train=False)
    for beta in (1.0, 100.0):
        u = latent.potential(generator, energy, g_vars, e_vars, beta=beta)(z)
        assert u.shape == (CHAINS,)
        np.testing.assert_allclose(u, 0.5 * jnp.sum(z ** 2, axis=1) + beta * e, rtol=1e-5)
    floored = latent.potential(generator, energy, g_vars, e_vars, energy_floor=float(e.max()))(z)
    np.testing.assert_allclose(
        floored, 0.5 * jnp.sum(z ** 2, axis=1) + kale.soft_floor(e, float(e.max())), rtol=1e-5)


def test_chains_are_independent_so_gradient_of_sum_is_per_chain_gradient():
    generator, energy, g_vars, e_vars = _pair()
    u = latent.potential(generator, energy, g_vars, e_vars, beta=2.0)
    z = jax.random.normal(jax.random.PRNGKey(2), (CHAINS, LATENT))
    batched = jax.grad(lambda z: jnp.sum(u(z)))(z)
    one_at_a_time = jnp.stack([jax.grad(lambda zi: u(zi[None])[0])(z[i]) for i in range(CHAINS)])
    np.testing.assert_allclose(batched, one_at_a_time, rtol=1e-5, atol=1e-6)
    # And a chain's potential does not depend on the other chains (inference-mode BatchNorm).
    moved = z.at[1:].set(10.0)
    np.testing.assert_allclose(u(moved)[0], u(z)[0], rtol=1e-6)


def test_potential_under_jit_with_variables_as_arguments_matches_eager():
    generator, energy, g_vars, e_vars = _pair()
    z = jax.random.normal(jax.random.PRNGKey(3), (CHAINS, LATENT))

    @jax.jit
    def jitted(g_vars, e_vars, z):
        return latent.potential(generator, energy, g_vars, e_vars)(z)

    np.testing.assert_allclose(jitted(g_vars, e_vars, z),
                               latent.potential(generator, energy, g_vars, e_vars)(z), rtol=1e-5)
