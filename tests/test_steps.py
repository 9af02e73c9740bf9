"""Tests of the 'gebm_mle' base step (kale_jax.train.steps) against closed forms on 1-D Gaussians.

Setting: an affine flow g = N(mu, s^2) (RealNVP with dim=1 and one layer, which is the identity for
D = 1, followed by the flow's element-wise affine map) and a quadratic energy
E(x) = prec (x - b)^2 / 2 (a test network). Then Z = E_g[exp(-E)] and the GEBM's log-likelihood
have closed forms (a product of Gaussians is Gaussian):
  log Z = 0.5 log(t2 / (s^2 + t2)) - (mu - b)^2 / (2 (s^2 + t2)),  t2 = 1 / prec.
Both steps run on 2 devices, so the all-gather and the gradient pmean are exercised.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kale_jax.networks.flows import RealNVP
from kale_jax.train import optim, parallel, steps
from kale_jax.train import state as state_lib

SCALE_BOUND = 3.0  # RealNVP's default soft bound on log-scales: log s = c tanh(p / c)


class Quadratic(nn.Module):
    """E(x) = prec * (x - center)^2 / 2 summed over dimensions: (N, D) -> (N,)."""
    center: float
    prec: float

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        center = self.param("center", nn.initializers.constant(self.center), (1,))
        return 0.5 * self.prec * jnp.sum(jnp.square(x - center), axis=-1)


def _spec(batch, prec, center, learning_rate=1e-2):
    adam = optim.OptimSpec(learning_rate, 0.9, 0.999, 1.0, 1)
    return steps.StepSpec(
        generator=RealNVP(dim=1, num_layers=1, hidden=1, depth=0, axis_name=parallel.AXIS_NAME),
        energy=Quadratic(center=center, prec=prec), latent_dim=1, global_batch_size=batch,
        criterion="kale", penalty="none", penalty_weight=0.0, energy_floor=None,
        energy_optim=adam, base_optim=adam)


def _state(spec, shift, log_scale_param):
    generator_vars = spec.generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))
    params = dict(generator_vars["params"])
    params["shift"] = jnp.array([shift], jnp.float32)
    params["log_scale"] = jnp.array([log_scale_param], jnp.float32)
    return state_lib.create(
        generator_variables={"params": params},
        energy_variables=spec.energy.init(jax.random.PRNGKey(1), jnp.zeros((1, 1))),
        energy_tx=spec.energy_tx, base_tx=spec.base_tx, key=jax.random.PRNGKey(7))


def _log_z(mu, s2, prec, center):
    t2 = 1.0 / prec
    return 0.5 * math.log(t2 / (s2 + t2)) - (mu - center) ** 2 / (2.0 * (s2 + t2))


def test_gebm_mle_loss_and_gradient_match_the_gaussian_closed_form():
    batch, prec, center = 8192, 2.0, -0.4
    mu, p = 0.5, 0.3  # flow shift and log-scale parameter
    log_s = SCALE_BOUND * math.tanh(p / SCALE_BOUND)
    dlog_s = 1.0 - math.tanh(p / SCALE_BOUND) ** 2
    s = math.exp(log_s)
    spec = _spec(batch, prec, center)
    dp = parallel.DataParallel("shard_map", jax.devices()[:2])
    grads_fn = dp.wrap(functools.partial(steps.gebm_mle_gradients, spec), batch_axes=(0,),
                       donate_state=False)
    x = np.random.default_rng(0).normal(0.2, 1.3, size=(batch, 1)).astype(np.float32)
    state = dp.replicate(_state(spec, mu, p))
    loss, grads, _, e_fake, base_nll = jax.device_get(grads_fn(state, dp.shard_batch(x)))
    loss, e_fake = float(np.ravel(loss)[0]), np.asarray(e_fake).reshape(-1)[:batch]

    # Exactly the documented estimate for the step's own latents (same key, global draw).
    z = np.asarray(jax.random.normal(steps.step_key(jax.random.PRNGKey(7), steps.BASE_STREAM, 0),
                                     (batch, 1)), np.float64)[:, 0]
    y = mu + s * z
    w = np.exp(-0.5 * prec * (y - center) ** 2)
    np.testing.assert_allclose(e_fake, 0.5 * prec * (y - center) ** 2, rtol=1e-4, atol=1e-5)
    nll_g = np.mean(0.5 * ((x[:, 0] - mu) / s) ** 2 + log_s + 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(loss, nll_g + math.log(np.mean(w)), rtol=1e-5)
    np.testing.assert_allclose(float(np.ravel(base_nll)[0]), nll_g, rtol=1e-5)

    # Against the closed form, within 4 Monte-Carlo standard errors (delta method over w).
    se_log_z = np.std(w, ddof=1) / (math.sqrt(batch) * np.mean(w))
    exact_loss = nll_g + _log_z(mu, s * s, prec, center)
    assert abs(loss - exact_loss) < 4 * se_log_z, (loss, exact_loss, se_log_z)

    # Gradients: the data term is exact; the log Z term's estimate is the self-normalised
    # mean of h = d(-E(y))/d(param) under weights w.
    t2 = 1.0 / prec
    dlogz_dmu = -(mu - center) / (s * s + t2)
    dlogz_dlogs = -s * s / (s * s + t2) + (mu - center) ** 2 * s * s / (s * s + t2) ** 2
    r = (x[:, 0] - mu) / s
    exact = {"shift": -np.mean(r) / s + dlogz_dmu,
             "log_scale": (np.mean(1.0 - r * r) + dlogz_dlogs) * dlog_s}
    h = {"shift": -prec * (y - center), "log_scale": -prec * (y - center) * s * z * dlog_s}
    for name in ("shift", "log_scale"):
        got = float(np.ravel(grads[name])[0])
        mean_h = np.sum(w * h[name]) / np.sum(w)
        se = math.sqrt(np.sum(w ** 2 * (h[name] - mean_h) ** 2)) / np.sum(w)
        assert abs(got - exact[name]) < 4 * se + 1e-4, (name, got, exact[name], se)
    # The (inactive) coupling conditioner gets no gradient.
    assert all(float(np.max(np.abs(g))) == 0.0
               for g in jax.tree_util.tree_leaves(grads["coupling0"]))


def test_gebm_mle_steps_fit_the_base_so_the_gebm_is_the_data_density():
    """Data N(m, v), energy held fixed at prec (x - b)^2 / 2: maximum likelihood of the GEBM
    g exp(-E) / Z over the base is attained at g = N(mu*, s*^2) with 1/s*^2 = 1/v - prec and
    mu* = s*^2 (m / v - prec b), where the GEBM equals the data density exactly."""
    batch, prec, center, m, v = 1024, 0.5, -1.0, 1.0, 1.0
    s2_star = 1.0 / (1.0 / v - prec)
    mu_star = s2_star * (m / v - prec * center)
    spec = _spec(batch, prec, center, learning_rate=0.05)
    dp = parallel.DataParallel("shard_map", jax.devices()[:2])
    step = dp.wrap(functools.partial(steps.gebm_mle_base_step, spec), batch_axes=(0,))
    state = dp.replicate(_state(spec, 0.0, 0.0))
    rng = np.random.default_rng(1)
    for _ in range(400):
        x = rng.normal(m, math.sqrt(v), size=(batch, 1)).astype(np.float32)
        state, metrics = step(state, dp.shard_batch(x))
    one = jax.device_get(dp.local_copy(state))
    assert float(one.base_step) == 400
    mu = float(one.generator_params["shift"][0])
    s2 = math.exp(2 * SCALE_BOUND * math.tanh(float(one.generator_params["log_scale"][0])
                                              / SCALE_BOUND))
    # Closed-form NLL of the GEBM on P = N(m, v): -E_P[log g] + E_P[E] + log Z.
    def gebm_nll(mu, s2):
        nll_g = 0.5 * ((m - mu) ** 2 + v) / s2 + 0.5 * math.log(2 * math.pi * s2)
        mean_e = 0.5 * prec * ((m - center) ** 2 + v)
        return nll_g + mean_e + _log_z(mu, s2, prec, center)
    true_nll = 0.5 * math.log(2 * math.pi * math.e * v)
    np.testing.assert_allclose(gebm_nll(mu_star, s2_star), true_nll, rtol=1e-12)
    assert gebm_nll(0.0, 1.0) - true_nll > 0.5  # the start is far off
    # Adam's steady-state jitter with stochastic batches keeps the iterate near, not at, the
    # optimum; the excess NLL is quadratic in that jitter.
    assert gebm_nll(mu, s2) - true_nll < 0.003, (mu, s2, mu_star, s2_star)
    assert abs(mu - mu_star) < 0.1 and abs(s2 / s2_star - 1.0) < 0.06
    metrics = jax.device_get(metrics)
    assert 0.0 < float(np.ravel(metrics["base_ess"])[0]) <= 1.0


def test_donsker_energy_step_sets_a_to_the_batch_log_partition_and_scales_its_update():
    """criterion 'donsker': after the step A is log mean exp(-E(y)) of the step's own base
    samples (energies before the update; the same global draw as documented), and the plateau
    scale multiplies the energy update (Adam's update x 0.5 = Adam with half the rate)."""
    import dataclasses  # pylint: disable=g-import-not-at-top
    from kale_jax.train import plateau  # pylint: disable=g-import-not-at-top
    batch, prec, center, mu, p = 64, 2.0, -0.4, 0.5, 0.3
    spec = dataclasses.replace(_spec(batch, prec, center), criterion="donsker")
    dp = parallel.DataParallel("shard_map", jax.devices()[:2])
    step = dp.wrap(functools.partial(steps.energy_step, spec), batch_axes=(0,),
                   donate_state=False)
    x = dp.shard_batch(np.random.default_rng(0).normal(0.2, 1.3, (batch, 1)).astype(np.float32))
    fresh = _state(spec, mu, p)
    moved = {}
    for scale in (1.0, 0.5):
        state = fresh.replace(plateau=plateau.init(1, 4)._replace(scale=jnp.float32(scale)))
        new, _ = step(dp.replicate(state), x)
        new = jax.device_get(new)
        moved[scale] = float(np.ravel(new.energy_params["center"])[0]) - center
    np.testing.assert_allclose(moved[0.5], 0.5 * moved[1.0], rtol=1e-5)
    key_z, _ = jax.random.split(steps.step_key(jax.random.PRNGKey(7), steps.ENERGY_STREAM, 0))
    z = np.asarray(jax.random.normal(key_z, (batch, 1)), np.float64)[:, 0]
    s = math.exp(SCALE_BOUND * math.tanh(p / SCALE_BOUND))
    e_fake = 0.5 * prec * (mu + s * z - center) ** 2
    np.testing.assert_allclose(float(np.ravel(new.log_partition)[0]),
                               math.log(np.mean(np.exp(-e_fake))), rtol=1e-4, atol=1e-5)
