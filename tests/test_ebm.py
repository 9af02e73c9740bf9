"""Tests of kale_jax.ebm: Langevin, the replay buffer, the loss, the training step, and maximum
likelihood recovering a Gaussian.

Statistical tests use fixed seeds; each tolerance is derived from the Monte-Carlo error of what it
checks (comments at the assertions).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kale_jax import ebm, hmc
from kale_jax.networks import MLPEnergy

BOX = ebm.InitialDistribution("uniform", low=-3.0, high=3.0)
# Compiled once each: eager calls would compile every operation separately.
_draw_starts = jax.jit(ebm.draw_starts, static_argnums=(2, 3))
_push_buffer = jax.jit(ebm.push_buffer)


# ---------------------------------------------------------------------------------- Langevin
PRECISION = np.array([0.5, 1.0, 4.0], np.float32)
MEAN = np.array([1.0, -2.0, 0.5], np.float32)


def _quadratic(x):
    """E(x) = sum_i p_i (x_i - m_i)^2 / 2: the target exp(-E) is N(m, diag(1 / p))."""
    return 0.5 * jnp.sum(PRECISION * jnp.square(x - MEAN), axis=1)


@pytest.mark.parametrize("noise_scale", [None, 0.1])
def test_langevin_reaches_the_gaussian_target(noise_scale):
    """Many chains from 0 reach the stationary law of the discretised dynamics.

    For E = p (x - m)^2 / 2 a step is x' - m = (1 - s p)(x - m) + eta xi, so the stationary law is
    N(m, eta^2 / (1 - (1 - s p)^2)) = N(m, eta^2 / (s p (2 - s p))): for eta = sqrt(2 s) (the
    default) 1 / (p (1 - s p / 2)), the target's 1 / p up to ULA's O(s) bias (11% here for
    p = 4, more than the tolerance, so the test tells the two apart). After 300 steps the start's
    bias is at most (1 - s p_min)^300 |m| < 1e-3.

    Tolerances: 4 standard errors over n = 4000 independent chains: sqrt(v / n) for the mean and
    v sqrt(2 / (n - 1)) (Gaussian sample variance) for the variance.
    """
    n, s = 4000, 0.05
    run = jax.jit(functools.partial(ebm.langevin, energy_fn=_quadratic, num_steps=300,
                                    step_size=s, noise_scale=noise_scale))
    x = np.asarray(run(jax.random.PRNGKey(0), x0=jnp.zeros((n, 3))), np.float64)
    eta2 = 2 * s if noise_scale is None else noise_scale ** 2
    variance = eta2 / (s * PRECISION * (2 - s * PRECISION))
    np.testing.assert_array_less(np.abs(x.mean(0) - MEAN), 4 * np.sqrt(variance / n))
    np.testing.assert_array_less(np.abs(x.var(0, ddof=1) - variance),
                                 4 * variance * np.sqrt(2 / (n - 1)))


def test_langevin_chains_depend_on_their_own_key_only_and_clip():
    """Splitting the chains (as over devices) with their per-chain keys reproduces one call;
    clip keeps positions in the box; zero steps return the starts."""
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (8, 2), minval=-3.0, maxval=3.0)
    key = jax.random.PRNGKey(2)
    run = functools.partial(ebm.langevin, energy_fn=_quadratic2, num_steps=7, step_size=0.1,
                            clip=(-1.0, 1.5))
    whole = run(key, x0=x0)
    keys = hmc.chain_keys(key, 8)
    halves = jnp.concatenate([run(keys[:4], x0=x0[:4]), run(keys[4:], x0=x0[4:])])
    np.testing.assert_allclose(whole, halves, rtol=1e-6, atol=1e-6)
    assert float(whole.min()) >= -1.0 and float(whole.max()) <= 1.5
    assert not np.allclose(whole, x0)
    np.testing.assert_array_equal(ebm.langevin(key, _quadratic2, x0, num_steps=0,
                                               step_size=0.1), x0)
    # vmap over independent runs (e.g. replicas) works and matches the separate calls.
    batched = jax.vmap(lambda k: run(k, x0=x0))(jnp.stack([key, key]))
    np.testing.assert_allclose(batched[1], whole, rtol=1e-6, atol=1e-6)


def _quadratic2(x):
    return 0.5 * jnp.sum(jnp.square(x - 2.0), axis=1)


# ----------------------------------------------------------------------------- replay buffer
def test_buffer_starts_full_of_initial_draws_and_pushes_fifo():
    buffer = jax.jit(ebm.init_buffer, static_argnums=(1, 2, 3))(jax.random.PRNGKey(0), 5, (2,),
                                                                 BOX)
    assert buffer.samples.shape == (5, 2) and int(buffer.next_index) == 0
    assert float(buffer.samples.min()) >= -3.0 and float(buffer.samples.max()) <= 3.0
    first = jnp.full((4, 2), 7.0)
    buffer = _push_buffer(buffer, first)
    np.testing.assert_array_equal(buffer.samples[:4], first)
    assert int(buffer.next_index) == 4
    second = jnp.arange(6.0).reshape(3, 2)
    before = np.asarray(buffer.samples)
    buffer = _push_buffer(buffer, second)  # slots 4, 0, 1 (wraps around)
    np.testing.assert_array_equal(buffer.samples[jnp.array([4, 0, 1])], second)
    np.testing.assert_array_equal(buffer.samples[2:4], before[2:4])
    assert int(buffer.next_index) == 2
    with pytest.raises(ValueError, match="capacity 5"):
        ebm.push_buffer(buffer, jnp.zeros((6, 2)))


def test_draw_starts_mixes_buffer_and_fresh_starts_at_the_reinit_rate():
    """Each start is fresh with probability reinit_prob, else a buffer row.

    The fresh count is Binomial(n, p): with n = 4000, p = 0.05 its share has standard error
    sqrt(p (1 - p) / n) = 0.0034; tolerance 4 of them. Buffer rows are all 10.0 here, fresh ones
    uniform in [-3, 3], so the two kinds are told apart exactly.
    """
    n, p = 4000, 0.05
    buffer = ebm.ReplayBuffer(samples=jnp.full((50, 2), 10.0), next_index=jnp.zeros((), jnp.int32))
    starts, fresh = _draw_starts(buffer, jax.random.PRNGKey(0), n, BOX, p)
    starts, fresh = np.asarray(starts), np.asarray(fresh)
    assert abs(fresh.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(starts[~fresh], 10.0)
    assert np.all(np.abs(starts[fresh]) <= 3.0)
    starts0, fresh0 = _draw_starts(buffer, jax.random.PRNGKey(1), n, BOX, 0.0)
    assert not np.any(fresh0) and np.all(np.asarray(starts0) == 10.0)
    # Rows are chosen uniformly: every one of 50 rows appears among 4000 draws.
    marked = buffer.replace(samples=jnp.arange(100.0).reshape(50, 2))
    starts, _ = _draw_starts(marked, jax.random.PRNGKey(2), n, BOX, 0.0)
    assert len(np.unique(np.asarray(starts)[:, 0])) == 50


# -------------------------------------------------------------------------------------- loss
def test_loss_and_its_gradient_match_the_closed_form():
    """d loss / d e_data_i = (1 + 2 alpha e_data_i) / n, d / d e_neg_j = (-1 + 2 alpha e_neg_j) / m;
    through a linear energy E(x) = w . x the gradient in w is mean x_data - mean x_neg +
    2 alpha (mean (w . x_data) x_data + mean (w . x_neg) x_neg)."""
    alpha = 0.3
    e_data, e_neg = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.5, 0.25])
    value = jax.jit(ebm.loss)(e_data, e_neg, alpha)
    expected = (np.mean(e_data) - np.mean(e_neg)
                + alpha * (np.mean(np.square(e_data)) + np.mean(np.square(e_neg))))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    g_data, g_neg = jax.jit(jax.grad(ebm.loss, argnums=(0, 1)))(e_data, e_neg, alpha)
    np.testing.assert_allclose(g_data, (1 + 2 * alpha * e_data) / 3, rtol=1e-6)
    np.testing.assert_allclose(g_neg, (-1 + 2 * alpha * e_neg) / 2, rtol=1e-6)

    rng = np.random.default_rng(0)
    x_data, x_neg = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    w = np.array([0.2, -0.7, 1.1])
    grad_w = jax.jit(jax.grad(lambda w: ebm.loss(x_data @ w, x_neg @ w, alpha)))(w)
    closed = (x_data.mean(0) - x_neg.mean(0)
              + 2 * alpha * (((x_data @ w)[:, None] * x_data).mean(0)
                             + ((x_neg @ w)[:, None] * x_neg).mean(0)))
    np.testing.assert_allclose(grad_w, closed, rtol=1e-5, atol=1e-6)
    # alpha = 0: the maximum-likelihood gradient, mean x_data - mean x_neg.
    np.testing.assert_allclose(jax.jit(jax.grad(lambda w: ebm.loss(x_data @ w, x_neg @ w)))(w),
                               x_data.mean(0) - x_neg.mean(0), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------- step
def test_train_step_updates_parameters_and_writes_the_chain_ends_to_the_buffer():
    """One tiny step: finite metrics, new parameters, step + 1, and the buffer's slots
    [0, batch) hold exactly the negatives of the documented draw (fold_in(key, step) split into
    the starts' and the chains' keys); the other slots are untouched."""
    batch, capacity = 8, 20
    spec = ebm.EBMSpec(energy=MLPEnergy(hidden=8, depth=1), global_batch_size=batch,
                       langevin_steps=5, step_size=0.05, buffer_size=capacity,
                       reinit_prob=0.25, initial=BOX, alpha=0.1)
    tx = optax.adam(1e-2)
    state = ebm.init_state(jax.random.PRNGKey(0), spec, tx, (2,))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, 2))
    new, metrics = jax.jit(functools.partial(ebm.train_step, spec, tx))(state, x)

    assert set(metrics) == {"loss", "energy_data", "energy_neg", "reinit_fraction",
                            "langevin_move"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(new.step) == 1 and int(new.buffer.next_index) == batch
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                   state.params, new.params)
    assert min(jax.tree_util.tree_leaves(moved)) > 0
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(new))

    @jax.jit
    def documented_draw(state):
        key_draw, key_chain = jax.random.split(jax.random.fold_in(state.key, 0))
        starts, fresh = ebm.draw_starts(state.buffer, key_draw, batch, BOX, spec.reinit_prob)
        energy = ebm.energy_fn(spec, state.params, {})
        negatives = ebm.langevin(hmc.chain_keys(jax.random.wrap_key_data(key_chain), batch),
                                 energy, starts, num_steps=5, step_size=0.05)
        return negatives, jnp.mean(fresh), ebm.loss(energy(x), energy(negatives), 0.1)

    negatives, reinit_fraction, loss = documented_draw(state)
    np.testing.assert_allclose(new.buffer.samples[:batch], negatives, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(new.buffer.samples[batch:], state.buffer.samples[batch:])
    np.testing.assert_allclose(metrics["reinit_fraction"], reinit_fraction)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-4, atol=1e-5)


class _Quadratic(nn.Module):
    """E(x) = a x^2 / 2 + b x with a = exp(log_a) > 0: exp(-E) is N(-b / a, 1 / a)."""

    @nn.compact
    def __call__(self, x, *, train):
        del train
        log_a = self.param("log_a", nn.initializers.zeros, ())
        b = self.param("b", nn.initializers.zeros, ())
        return 0.5 * jnp.exp(log_a) * jnp.square(x[:, 0]) + b * x[:, 0]


def test_maximum_likelihood_recovers_a_gaussian():
    """The EBM step on N = 8192 draws of N(mu, sigma^2) learns E = a x^2 / 2 + b x whose implied
    moments -b / a and 1 / a match mu and sigma^2 within Monte-Carlo error.

    What the fixed point is: the step matches the data's first two moments with the negatives'.
    The negatives are (up to the 5% fresh chains, below) the stationary law of the Langevin
    sampler, N(-b / a, 1 / (a (1 - a s / 2))) (see the Langevin test), so at the fixed point
    -b / a = mean and 1 / a = variance * (1 - a s / 2) of the training sample: we compare
    1 / a / (1 - a s / 2) (a 4% correction here) with sigma^2. Fresh chains start uniform on
    [-3, 3] and contract by (1 - a s)^K = 0.92^60 < 0.007 in K = 60 steps, which shifts the
    negatives' mean by at most 0.05 * 0.007 * 4.5 = 1.6e-3, a third of the tolerance's unit.

    Tolerance: the learned moments estimate the training sample's, which differ from the truth by
    sigma / sqrt(N) = 0.0055 (mean) and sigma^2 sqrt(2 / N) = 0.0039 (variance). Optimisation
    noise adds the spread of the iterates' average over the last 500 steps, estimated by batch
    means (10 batches). Each check allows 4 times the combined standard error.
    """
    mu, sigma, n_data, batch, s = 1.5, 0.5, 8192, 256, 0.02
    warm, steady = 1000, 1000
    data = mu + sigma * jax.random.normal(jax.random.PRNGKey(10), (n_data, 1))
    spec = ebm.EBMSpec(energy=_Quadratic(), global_batch_size=batch, langevin_steps=60,
                       step_size=s, buffer_size=2048, reinit_prob=0.05, initial=BOX, alpha=0.0)
    tx = optax.adam(optax.piecewise_constant_schedule(0.1, {warm: 0.2}))  # 0.1, then 0.02
    step = functools.partial(ebm.train_step, spec, tx)

    def body(state, key):
        state, _ = step(state, data[jax.random.randint(key, (batch,), 0, n_data)])
        return state, state.params

    state = ebm.init_state(jax.random.PRNGKey(0), spec, tx, (1,))
    _, trace = jax.jit(lambda st, keys: jax.lax.scan(body, st, keys))(
        state, jax.random.split(jax.random.PRNGKey(1), warm + steady))
    a = np.exp(np.asarray(trace["log_a"], np.float64))[-steady // 2:]
    b = np.asarray(trace["b"], np.float64)[-steady // 2:]
    correction = 1 - a * s / 2
    mean, variance = -b / a, 1 / a / correction

    def check(values, truth, data_se):
        blocks = values.reshape(10, -1).mean(1)
        iterate_se = blocks.std(ddof=1) / np.sqrt(10)
        tolerance = 4 * np.hypot(data_se, iterate_se)
        assert abs(values.mean() - truth) < tolerance, (values.mean(), truth, tolerance)

    check(mean, mu, sigma / np.sqrt(n_data))
    check(variance, sigma ** 2, sigma ** 2 * np.sqrt(2 / n_data))
