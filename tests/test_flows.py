"""Tests of kale_jax.networks.flows (RealNVP, MAF) and of the Monte-Carlo log Z of
kale_jax.metrics.nll that turns a flow base into a GEBM likelihood.

Flows get random parameters (not the identity they start as), so every layer matters. Shapes are
few and nets tiny: compile time dominates.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kale_jax import networks
from kale_jax.metrics import nll
from kale_jax.networks import flows

FLOW_CLASSES = {"realnvp": flows.RealNVP, "maf": flows.MAF}


def _random_flow(name, dim, seed=0):
    """A small flow with all parameters drawn N(p, 0.2^2) around their initial values."""
    flow = FLOW_CLASSES[name](dim=dim, num_layers=3, hidden=8, depth=1)
    variables = flow.init(jax.random.key(seed), jnp.zeros((1, dim)))  # 3 layers: both masks
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    leaves = [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return flow, jax.tree_util.tree_unflatten(tree, leaves)


@pytest.fixture(scope="module", params=[("realnvp", 1), ("realnvp", 2), ("maf", 1), ("maf", 2)],
                ids=lambda p: f"{p[0]}-{p[1]}d")
def flow_case(request):
    name, dim = request.param
    flow, variables = _random_flow(name, dim)
    fns = {m: jax.jit(lambda v, x, m=m: flow.apply(v, x, method=m))
           for m in ("forward", "inverse", "log_prob")}

    @jax.jit
    def numerical_log_prob(v, x):
        """log N(f^-1(x)) + log|det J_{f^-1}(x)| with the Jacobian from jax.jacfwd."""
        inverse = lambda xi: flow.apply(v, xi[None], method="inverse")[0][0]
        z = jax.vmap(inverse)(x)
        jac = jax.vmap(jax.jacfwd(inverse))(x)
        return flows.standard_normal_log_prob(z) + jnp.linalg.slogdet(jac)[1]

    return name, dim, flow, variables, fns, numerical_log_prob


def test_log_prob_is_the_change_of_variables(flow_case):
    _, dim, _, v, fns, numerical = flow_case
    x = 1.5 * jax.random.normal(jax.random.key(1), (64, dim))
    np.testing.assert_allclose(fns["log_prob"](v, x), numerical(v, x), atol=2e-5, rtol=1e-5)
    # The forward log-determinant is minus the inverse one at the matching point.
    z, log_det_inverse = fns["inverse"](v, x)
    np.testing.assert_allclose(fns["forward"](v, z)[1], -log_det_inverse, atol=2e-5)


def test_inverse_undoes_forward(flow_case):
    _, dim, _, v, fns, _ = flow_case
    z = jax.random.normal(jax.random.key(2), (64, dim))
    x, _ = fns["forward"](v, z)
    assert float(jnp.max(jnp.abs(x - z))) > 1e-2  # the random flow is not the identity
    np.testing.assert_allclose(fns["inverse"](v, x)[0], z, atol=1e-4, rtol=1e-4)  # float32
    np.testing.assert_allclose(fns["forward"](v, fns["inverse"](v, z)[0])[0], z, atol=1e-4, rtol=1e-4)


def test_samples_have_the_moments_log_prob_implies(flow_case):
    """Mass, mean and covariance of exp(log_prob) by quadrature on a grid vs sample moments."""
    _, dim, flow, v, fns, _ = flow_case
    num = 20_000
    samples = np.asarray(jax.jit(lambda v, k: flow.apply(v, k, num, method="sample"))(
        v, jax.random.key(3)), np.float64)
    # The random flows have heavy tails: the grid spans the samples' range with a margin.
    n = 8001 if dim == 1 else 601
    axes = [np.linspace(-1.2 * m - 1, 1.2 * m + 1, n) for m in np.abs(samples).max(0)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    density = np.exp(np.asarray(fns["log_prob"](v, jnp.asarray(grid, jnp.float32)), np.float64))
    cell = np.prod([a[1] - a[0] for a in axes])
    mass = density.sum() * cell
    assert abs(mass - 1.0) < 2e-3, mass
    mean = (grid * density[:, None]).sum(0) * cell
    cov = ((grid - mean).T * density) @ (grid - mean) * cell

    sample_mean = samples.mean(0)
    sample_cov = np.cov(samples, rowvar=False).reshape(dim, dim)
    se_mean = np.sqrt(np.diag(cov) / num)
    assert np.all(np.abs(sample_mean - mean) < 4 * se_mean + 1e-3), (sample_mean, mean)
    # se of a covariance entry: sqrt(var((x_i - m_i)(x_j - m_j)) / N), estimated from samples.
    centred = samples - samples.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.std(0) / math.sqrt(num)
    assert np.all(np.abs(sample_cov - cov) < 4 * se_cov + 1e-3), (sample_cov, cov)


@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_a_flow_set_to_a_gaussian_has_its_density_and_moments(name):
    """Identity transforms and final affine (shift m, log-scale s): the flow is N(m, diag e^2s)."""
    dim = 2
    flow = FLOW_CLASSES[name](dim=dim, num_layers=2, hidden=8, depth=1)
    variables = flow.init(jax.random.key(0), jnp.zeros((1, dim)))
    m, s = np.array([1.0, -2.0], np.float32), np.array([0.5, -0.7], np.float32)
    params = dict(variables["params"])
    params["shift"], params["log_scale"] = jnp.asarray(m), jnp.asarray(s / 3.0)  # soft bound:
    bound = flow.scale_bound                                    # c tanh(s/c) with c = 3
    std = np.exp(bound * np.tanh(s / 3.0 / bound))
    variables = {"params": params}
    x = np.random.RandomState(0).randn(16, dim).astype(np.float32)
    expected = (-0.5 * np.sum(((x - m) / std) ** 2, 1) - np.sum(np.log(std))
                - dim * 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(flow.apply(variables, x, method="log_prob"), expected, atol=1e-5)
    num = 40_000
    samples = np.asarray(flow.apply(variables, jax.random.key(1), num, method="sample"))
    np.testing.assert_array_less(np.abs(samples.mean(0) - m), 4 * std / math.sqrt(num))
    # Var of the sample variance of a Gaussian: 2 sigma^4 / (N - 1).
    np.testing.assert_array_less(np.abs(samples.var(0, ddof=1) - std ** 2),
                                 4 * std ** 2 * math.sqrt(2 / (num - 1)))


def test_flows_are_registered_generators_with_checked_arguments():
    assert set(networks.FLOW_NAMES) == {"realnvp", "maf"}
    for name in networks.FLOW_NAMES:
        flow = networks.get_generator(name, dim=3, num_layers=2, hidden=4, depth=1)
        assert networks.is_flow(flow)
        variables = networks.init_variables(flow, jax.random.key(0), jnp.zeros((1, 3)))
        assert set(variables) == {"params"}  # no mutable state
        z = jnp.ones((2, 3))
        # An untrained flow is the identity: the generator view returns its latents.
        np.testing.assert_allclose(flow.apply(variables, z, train=True), z, atol=1e-6)
        with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
            flow.apply(variables, jnp.ones((2, 4)))
        with pytest.raises(ValueError, match="num_layers=0"):
            networks.get_generator(name, dim=3, num_layers=0)
    assert not networks.is_flow(networks.get_generator("mlp"))


def test_made_masks_are_autoregressive():
    """Output i of a MADE depends only on inputs earlier in the block's order (any depth)."""
    for reverse in (False, True):
        masks = flows.made_masks(dim=5, hidden=7, depth=2, reverse=reverse)
        connectivity = masks[0]
        for mask in masks[1:]:
            connectivity = (connectivity @ mask > 0).astype(np.float32)
        order = np.arange(1, 6)[::-1] if reverse else np.arange(1, 6)
        allowed = order[:, None] < order[None, :]  # input j -> output i iff order_j < order_i
        assert np.all(connectivity[~allowed] == 0)
        # Every output except the first in the order sees every earlier input (full MADE).
        assert np.array_equal(connectivity > 0, allowed)


# --------------------------------------------------------------------------- Monte-Carlo log Z
A = 0.5  # quadratic energy E(x) = A |x|^2 / 2 under N(0, I_d): Z = (1 + A)^(-d/2)


def test_log_z_estimate_is_unbiased_for_z_with_a_calibrated_standard_error():
    d, m, reps = 2, 64, 4000
    y = jax.random.normal(jax.random.key(0), (reps, m, d))
    e = 0.5 * A * jnp.sum(y ** 2, -1)
    log_z, stderr = jax.vmap(nll.log_partition)(e)
    z_true = (1.0 + A) ** (-d / 2)
    z_hat = np.exp(np.asarray(log_z, np.float64))
    assert abs(z_hat.mean() - z_true) < 4 * z_hat.std(ddof=1) / math.sqrt(reps)
    # log Z_hat is biased low (Jensen), by about var(log Z_hat) / 2 here.
    assert np.asarray(log_z).mean() < math.log(z_true)
    # The delta-method standard error matches the spread of log Z_hat across replicates.
    assert abs(float(np.mean(stderr)) / float(np.std(log_z)) - 1.0) < 0.1
    # The streaming form over uneven chunks with padding gives the one-shot numbers.
    state = nll.log_z_init()
    flat = e[:3].reshape(-1)
    state = nll.log_z_update(state, flat[:100])
    state = nll.log_z_update(state, jnp.concatenate([flat[100:], jnp.zeros(8)]),
                             valid=jnp.arange(flat.shape[0] - 100 + 8) < flat.shape[0] - 100)
    np.testing.assert_allclose(nll.log_z_finalize(state), nll.log_partition(flat), rtol=1e-5)


class _Quadratic(nn.Module):
    """E(x) = A |x|^2 / 2: with the identity flow the GEBM is N(0, I / (1 + A))."""

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        return 0.5 * A * jnp.sum(x ** 2, -1)


def test_gebm_nll_of_an_identity_flow_and_a_quadratic_energy_is_exact():
    d = 2
    flow = flows.RealNVP(dim=d, num_layers=2, hidden=4, depth=1)
    flow_vars = flow.init(jax.random.key(0), jnp.zeros((1, d)))  # identity: g = N(0, I)
    energy = _Quadratic()
    x = np.random.RandomState(1).randn(3000, d).astype(np.float32) / math.sqrt(1 + A)
    out = nll.flow_and_gebm_nll(flow, energy, flow_vars, {}, {"test": x}, jax.random.key(2),
                                num_base_samples=20_000)
    log_z_true = -0.5 * d * math.log(1 + A)
    assert abs(out["log_z"] - log_z_true) < 4 * out["log_z_stderr"]
    true_q = -0.5 * (1 + A) * np.sum(x.astype(np.float64) ** 2, 1) + 0.5 * d * math.log(
        (1 + A) / (2 * math.pi))
    assert abs(out["gebm_test_nll"] - (-true_q.mean())) < 4 * out["log_z_stderr"] + 1e-4
    true_g = -0.5 * np.sum(x.astype(np.float64) ** 2, 1) - 0.5 * d * math.log(2 * math.pi)
    assert abs(out["base_test_nll"] - (-true_g.mean())) < 1e-4
