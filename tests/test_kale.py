"""Tests of kale_jax.kale against closed forms on Gaussians and hand computations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kale_jax import kale


def _gaussian_pair(d, seed):
    """P = N(mp, Sp), G = N(mg, Sg) with Sp < Sg, so exp(-E) is G-integrable for quadratic E."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    sg = q @ np.diag(rng.uniform(1.0, 2.0, d)) @ q.T
    sp = 0.5 * sg + 0.1 * np.eye(d)
    mp = rng.normal(size=d) * 0.5
    mg = rng.normal(size=d) * 0.5
    return mp, sp, mg, sg


def _kl(mp, sp, mg, sg):
    """KL(N(mp, Sp) || N(mg, Sg)) in nats."""
    d = mp.shape[0]
    sg_inv = np.linalg.inv(sg)
    diff = mg - mp
    return 0.5 * (np.trace(sg_inv @ sp) + diff @ sg_inv @ diff - d
                  + np.linalg.slogdet(sg)[1] - np.linalg.slogdet(sp)[1])


def _samples(m, s, n, seed):
    return np.random.default_rng(seed).multivariate_normal(m, s, size=n).astype(np.float32)


def _exact_energy(mp, sp, mg, sg):
    """-log(dP/dG)(x), up to an additive constant (KALE is invariant to it)."""
    sp_inv, sg_inv = np.linalg.inv(sp), np.linalg.inv(sg)

    def energy(x):
        dp, dg = x - mp, x - mg
        return (0.5 * np.einsum("ni,ij,nj->n", dp, sp_inv, dp)
                - 0.5 * np.einsum("ni,ij,nj->n", dg, sg_inv, dg))

    return energy


def _dv_standard_error(e_data, e_fake):
    """Delta-method standard error of -mean(e_data) - log mean(exp(-e_fake))."""
    w = np.exp(-(e_fake - e_fake.min()))
    return np.sqrt(e_data.var() / e_data.size + w.var() / (w.mean() ** 2 * w.size))


@pytest.mark.parametrize("d", [1, 3, 8])
def test_estimate_with_exact_energy_matches_kl(d):
    mp, sp, mg, sg = _gaussian_pair(d, seed=d)
    energy = _exact_energy(mp, sp, mg, sg)
    n = 200_000
    e_data = energy(_samples(mp, sp, n, seed=1)).astype(np.float64)
    e_fake = energy(_samples(mg, sg, n, seed=2)).astype(np.float64)
    est = float(kale.estimate(jnp.asarray(e_data), jnp.asarray(e_fake)))
    se = _dv_standard_error(e_data, e_fake)
    assert abs(est - _kl(mp, sp, mg, sg)) < 4 * se + 1e-3, (est, _kl(mp, sp, mg, sg), se)


def test_dual_form_equals_dv_form_at_best_log_partition_and_is_below_elsewhere():
    rng = np.random.default_rng(0)
    e_data = jnp.asarray(rng.normal(size=100), jnp.float32)
    e_fake = jnp.asarray(rng.normal(size=300) + 1.0, jnp.float32)
    a_star = kale.log_partition(e_fake)
    dv = kale.estimate(e_data, e_fake)
    np.testing.assert_allclose(kale.estimate(e_data, e_fake, a_star), dv, rtol=1e-5, atol=1e-6)
    for delta in (-0.5, 0.3):
        assert kale.estimate(e_data, e_fake, a_star + delta) < dv - 1e-4


def test_energy_loss_is_minimised_over_a_at_log_partition():
    rng = np.random.default_rng(1)
    e_data = jnp.asarray(rng.normal(size=64), jnp.float32)
    e_fake = jnp.asarray(2.0 * rng.normal(size=256) - 3.0, jnp.float32)
    loss_of_a = lambda a: kale.energy_loss(e_data, e_fake, a)
    a_star = kale.log_partition(e_fake)
    assert abs(float(jax.grad(loss_of_a)(a_star))) < 1e-5
    assert float(jax.grad(jax.grad(loss_of_a))(a_star)) > 0  # convex in A: a minimum
    # And a direct search agrees with the closed form.
    grid = jnp.linspace(a_star - 2, a_star + 2, 4001)
    best = grid[jnp.argmin(jax.vmap(loss_of_a)(grid))]
    assert abs(float(best - a_star)) <= 2e-3


def test_log_partition_is_stable_and_streaming_matches_one_shot():
    e = jnp.array([1000.0, 1001.0, 1002.0])  # exp(-1000) underflows in float32
    expected = -1000.0 + np.log(np.mean(np.exp(-np.array([0.0, 1.0, 2.0]))))
    np.testing.assert_allclose(kale.log_partition(e), expected, rtol=1e-6)
    np.testing.assert_allclose(kale.log_partition(-e), 1002.0 + np.log(np.mean(
        np.exp(np.array([-2.0, -1.0, 0.0])))), rtol=1e-6)

    batches = [jax.random.normal(jax.random.PRNGKey(i), (n,)) * 3 + i
               for i, n in enumerate([5, 17, 64])]
    state = kale.log_partition_init()
    for b in batches:
        state = kale.log_partition_update(state, b)
    np.testing.assert_allclose(kale.log_partition_finalize(state),
                               kale.log_partition(jnp.concatenate(batches)), rtol=1e-5)


def test_base_loss_is_stable_for_large_energies():
    e_data = jnp.array([0.0, 1.0])
    e_fake = jnp.array([-500.0, 500.0])
    loss = kale.base_loss(e_data, e_fake)
    np.testing.assert_allclose(loss, -0.5 - (500.0 - np.log(2.0)), rtol=1e-6)


def _fit(energy, init_params, x_data, x_fake, steps=1500, lr=0.05, criterion="kale"):
    """Maximises the KALE objective F(E, A) over energy params and A with Adam (full batch);
    criterion='donsker': the Donsker-Varadhan form over the energy params alone."""
    params = (init_params, jnp.zeros(()))

    def loss(p):
        e_params, a = p
        if criterion == "donsker":
            return kale.donsker_energy_loss(energy(e_params, x_data), energy(e_params, x_fake))
        return kale.energy_loss(energy(e_params, x_data), energy(e_params, x_fake), a)

    opt = optax.adam(lr)

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return p

    return run(params)[0]


def _linear(p, x):
    return x @ p["w"]


def _quadratic(p, x):
    m = 0.5 * (p["m"] + p["m"].T)
    return 0.5 * jnp.einsum("ni,ij,nj->n", x, m, x) + x @ p["w"]


@pytest.mark.parametrize("d", [2, 6])
def test_fitted_linear_energy_is_strictly_below_kl_and_quadratic_reaches_it(d):
    mp, sp, mg, sg = _gaussian_pair(d, seed=10 + d)
    kl = _kl(mp, sp, mg, sg)
    n = 20_000
    x_data, x_fake = _samples(mp, sp, n, seed=3), _samples(mg, sg, n, seed=4)
    # Held-out samples: the fitted energy is evaluated on data it was not fitted to.
    t_data, t_fake = _samples(mp, sp, n, seed=5), _samples(mg, sg, n, seed=6)

    def held_out(energy, params):
        e_d = np.asarray(energy(params, t_data), np.float64)
        e_f = np.asarray(energy(params, t_fake), np.float64)
        return float(kale.estimate(e_d, e_f)), _dv_standard_error(e_d, e_f)

    # Linear class: sup_w -w.mp - log E_G exp(-w.x) = 0.5 (mg - mp)^T Sg^-1 (mg - mp), the mean
    # term of KL alone; the covariance mismatch is invisible to it, so the bound is strict.
    diff = mg - mp
    linear_bound = 0.5 * diff @ np.linalg.solve(sg, diff)
    assert linear_bound < kl - 0.1
    linear = _fit(_linear, {"w": jnp.zeros(d)}, x_data, x_fake)
    est, se = held_out(_linear, linear)
    assert est < kl - 0.1
    assert abs(est - linear_bound) < 4 * se + 0.02, (est, linear_bound, se)

    # Quadratic class contains -log(dP/dG): KALE = KL.
    quadratic = _fit(_quadratic, {"m": jnp.zeros((d, d)), "w": jnp.zeros(d)}, x_data, x_fake,
                     steps=3000)
    est, se = held_out(_quadratic, quadratic)
    assert abs(est - kl) < 4 * se + 0.02, (est, kl, se)


def test_base_loss_gradient_is_softmax_weighted_generator_gradient():
    key_z, key_x, key_t = jax.random.split(jax.random.PRNGKey(0), 3)
    d_latent, d_data, n = 3, 4, 16
    theta = {"w": jax.random.normal(key_t, (d_latent, d_data)), "b": jnp.arange(d_data) * 0.1}
    z = jax.random.normal(key_z, (n, d_latent))
    x = jax.random.normal(key_x, (n, d_data))

    def generator(th, z):
        return jnp.tanh(z @ th["w"] + th["b"])

    def energy(x):
        return jnp.sum(jnp.sin(3 * x), axis=-1) + 0.5 * jnp.sum(x ** 2, axis=-1)

    grad = jax.grad(lambda th: kale.base_loss(energy(x), energy(generator(th, z))))(theta)

    e_fake = energy(generator(theta, z))
    weights = jax.nn.softmax(-e_fake)
    per_sample = jax.jacrev(lambda th: energy(generator(th, z)))(theta)  # leaves (n, ...)
    explicit = jax.tree_util.tree_map(lambda j: jnp.tensordot(weights, j, axes=1), per_sample)
    for g, e in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(explicit)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_gradient_penalty_on_linear_energy_is_squared_weight_norm():
    w = jnp.arange(2 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 1) - 2.0
    energy = lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # images (n, 2, 3, 1) -> (n,)
    x_real = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3, 1))
    x_fake = jax.random.normal(jax.random.PRNGKey(2), (5, 2, 3, 1))
    gp = kale.gradient_penalty(energy, x_real, x_fake, jax.random.PRNGKey(3))
    np.testing.assert_allclose(gp, float(jnp.sum(w ** 2)), rtol=1e-6)


def test_gradient_penalty_on_quadratic_energy_uses_interpolates_in_the_segment():
    # E(x) = 0.5 |x|^2 has gradient x_hat; with x_real = x_fake = c every interpolate is c.
    c = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    energy = lambda x: 0.5 * jnp.sum(x ** 2, axis=-1)
    gp = kale.gradient_penalty(energy, c, c, jax.random.PRNGKey(0))
    np.testing.assert_allclose(gp, (5.0 + 10.0) / 2, rtol=1e-6)
    # x_fake = 0: grad = a x_real with a ~ U[0, 1], so the mean over many examples is |x|^2 / 3.
    x = jnp.ones((20000, 2))
    gp = kale.gradient_penalty(energy, x, jnp.zeros_like(x), jax.random.PRNGKey(1))
    # std of 2 a^2 over U[0,1] is 2 sqrt(1/5 - 1/9); 5 standard errors.
    assert abs(float(gp) - 2.0 / 3.0) < 5 * 2 * np.sqrt(1 / 5 - 1 / 9) / np.sqrt(20000)


def test_penalty_names_and_l2():
    params = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array([[3.0]])}}
    energy = lambda x: jnp.sum(2.0 * x, axis=-1)
    x = jnp.ones((4, 3))
    kwargs = dict(energy_fn=energy, params=params, x_real=x, x_fake=-x, key=jax.random.PRNGKey(0))
    assert float(kale.penalty("none", **kwargs)) == 0.0
    np.testing.assert_allclose(kale.penalty("l2", **kwargs), 14.0)
    np.testing.assert_allclose(kale.penalty("gradient", **kwargs), 12.0)
    np.testing.assert_allclose(kale.penalty("gradient_l2", **kwargs), 26.0)
    with pytest.raises(ValueError, match="penalty 'wgan' is not one of"):
        kale.penalty("wgan", **kwargs)


def test_soft_floor_and_soft_clip():
    e = jnp.array([-20.0, -10.0, -3.0, 5.0])
    np.testing.assert_allclose(kale.soft_floor(e), [-10.0, -10.0, -3.0, 5.0])
    tx = kale.soft_clip_gradients()
    g = {"w": jnp.array([0.0, 1e-3, 1.0, -3.0, 100.0])}
    updates, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(updates["w"], 2 * g["w"] / (1 + g["w"] ** 2), rtol=1e-6)
    assert float(jnp.max(jnp.abs(updates["w"]))) <= 1.0
    # The training leaves A out: 2g / (1 + g^2) falls for g > 1 (0.6 at g = 3 vs 1 at g = 1).
    tx = kale.soft_clip_gradients(exclude=("log_partition",))
    g = {"energy": {"w": jnp.array([1.0, 3.0])}, "log_partition": jnp.array(-3.0)}
    updates, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(updates["energy"]["w"], [1.0, 0.6], rtol=1e-6)
    assert float(updates["log_partition"]) == -3.0


def test_gan_losses_against_hand_values():
    e_data, e_fake = jnp.array([0.0, -1.0]), jnp.array([2.0])
    sp = lambda t: np.log1p(np.exp(t))
    np.testing.assert_allclose(kale.gan_energy_loss("logistic", e_data, e_fake),
                               (sp(0.0) + sp(-1.0)) / 2 + sp(-2.0), rtol=1e-6)
    np.testing.assert_allclose(kale.gan_base_loss("logistic", e_data, e_fake), sp(2.0), rtol=1e-6)
    np.testing.assert_allclose(kale.gan_energy_loss("wasserstein", e_data, e_fake), -0.5 - 2.0)
    np.testing.assert_allclose(kale.gan_base_loss("wasserstein", e_data, e_fake), 2.0)
    with pytest.raises(ValueError, match="not one of"):
        kale.gan_energy_loss("hinge", e_data, e_fake)


def test_gradient_penalty_with_given_weights_matches_the_weights_its_key_draws():
    energy = lambda x: jnp.sum(jnp.sin(x), axis=-1)
    x_real = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    x_fake = jax.random.normal(jax.random.PRNGKey(2), (7, 3))
    key = jax.random.PRNGKey(3)
    a = jax.random.uniform(key, (7,))
    by_key = kale.gradient_penalty(energy, x_real, x_fake, key)
    by_weights = kale.gradient_penalty(energy, x_real, x_fake, weights=a)
    np.testing.assert_allclose(by_key, by_weights, rtol=1e-6)
    # The hand computation: grad of sum(sin) is cos at the interpolates.
    x_hat = a[:, None] * x_real + (1 - a[:, None]) * x_fake
    np.testing.assert_allclose(by_weights, jnp.mean(jnp.sum(jnp.cos(x_hat) ** 2, -1)), rtol=1e-5)
    with pytest.raises(ValueError, match="needs `key` or `weights`"):
        kale.gradient_penalty(energy, x_real, x_fake)


def test_gebm_base_loss_is_minus_mean_log_g_plus_log_mean_exp_and_stable():
    log_g = np.array([-1.0, -2.5, 0.3], np.float32)
    e_fake = np.array([0.2, -0.7, 1.5, 0.0], np.float32)
    expected = -np.mean(log_g) + np.log(np.mean(np.exp(-e_fake.astype(np.float64))))
    np.testing.assert_allclose(kale.gebm_base_loss(log_g, e_fake), expected, rtol=1e-6)
    # Shifting every energy by c shifts the loss by -c, also far outside float32's exp range.
    np.testing.assert_allclose(kale.gebm_base_loss(log_g, e_fake - 1000.0), expected + 1000.0,
                               rtol=1e-6)


def test_effective_sample_size_of_equal_and_of_one_dominant_weight():
    np.testing.assert_allclose(kale.effective_sample_size(jnp.full((50,), 3.0)), 50.0, rtol=1e-5)
    e = jnp.concatenate([jnp.array([-200.0]), jnp.zeros(49)])
    np.testing.assert_allclose(kale.effective_sample_size(e), 1.0, rtol=1e-5)
    # Two equal weights and the rest negligible: ESS 2.
    e = jnp.concatenate([jnp.array([-50.0, -50.0]), jnp.zeros(10)])
    np.testing.assert_allclose(kale.effective_sample_size(e), 2.0, rtol=1e-5)


# ------------------------------------------------------------------------------ 'donsker'
@pytest.mark.parametrize("d", [1, 3])
def test_donsker_loss_at_the_exact_energy_is_minus_kl_for_any_constant(d):
    """DV(E) = -E_P[E] - log E_G[exp(-E)] at E* = -log dP/dG + c is KL(P||G) for every c: the
    loss is exactly shift invariant on arrays, and its Monte-Carlo value is -KL within 4 delta-
    method standard errors (the estimate's error; 1e-3 for float32 rounding)."""
    mp, sp, mg, sg = _gaussian_pair(d, seed=20 + d)
    energy = _exact_energy(mp, sp, mg, sg)
    n = 200_000
    e_data = energy(_samples(mp, sp, n, seed=7)).astype(np.float64)
    e_fake = energy(_samples(mg, sg, n, seed=8)).astype(np.float64)
    kl, se = _kl(mp, sp, mg, sg), _dv_standard_error(e_data, e_fake)
    base = float(kale.donsker_energy_loss(jnp.asarray(e_data), jnp.asarray(e_fake)))
    assert abs(-base - kl) < 4 * se + 1e-3, (-base, kl, se)
    for c in (-30.0, 3.0, 700.0):  # 700: exp(-E) underflows without the stable log-mean-exp
        shifted = float(kale.donsker_energy_loss(jnp.asarray(e_data + c),
                                                 jnp.asarray(e_fake + c)))
        # float32: energies near 700 are stored to ~700 * 2^-24 = 4e-5 (x2 for the two terms).
        np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-4 + 2e-7 * abs(c))


def test_donsker_loss_is_the_kale_loss_at_its_best_a_with_the_same_energy_gradient():
    """mean E(x) + log mean exp(-E(y)) = energy_loss(E, A*) at A* = log mean exp(-E(y)), and the
    energy gradients agree (the envelope theorem: d/dA energy_loss = 0 at A*), which is what the
    authors' code computes with a detached batch A."""
    rng = np.random.default_rng(3)
    e_data = jnp.asarray(rng.normal(size=50), jnp.float32)
    e_fake = jnp.asarray(1.5 * rng.normal(size=70) + 0.5, jnp.float32)
    a_star = kale.log_partition(e_fake)
    np.testing.assert_allclose(kale.donsker_energy_loss(e_data, e_fake),
                               kale.energy_loss(e_data, e_fake, a_star), rtol=1e-5, atol=1e-6)
    g_dv = jax.grad(kale.donsker_energy_loss, argnums=(0, 1))(e_data, e_fake)
    g_kale = jax.grad(lambda x, y: kale.energy_loss(
        x, y, jax.lax.stop_gradient(kale.log_partition(y))), argnums=(0, 1))(e_data, e_fake)
    for a, b in zip(g_dv, g_kale):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_dv[1], -jax.nn.softmax(-e_fake), rtol=1e-5, atol=1e-7)
    assert "donsker" in kale.CRITERIA


def test_fitted_donsker_energies_reach_the_same_closed_forms_as_kale():
    """As test_fitted_linear_energy_is_strictly_below_kl_and_quadratic_reaches_it, with the
    'donsker' loss (no A): the quadratic class reaches KL, the linear class its closed form."""
    d = 2
    mp, sp, mg, sg = _gaussian_pair(d, seed=10 + d)
    kl = _kl(mp, sp, mg, sg)
    n = 20_000
    x_data, x_fake = _samples(mp, sp, n, seed=3), _samples(mg, sg, n, seed=4)
    t_data, t_fake = _samples(mp, sp, n, seed=5), _samples(mg, sg, n, seed=6)
    diff = mg - mp
    for energy, init, closed in (
            (_linear, {"w": jnp.zeros(d)}, 0.5 * diff @ np.linalg.solve(sg, diff)),
            (_quadratic, {"m": jnp.zeros((d, d)), "w": jnp.zeros(d)}, kl)):
        params = _fit(energy, init, x_data, x_fake, steps=3000, criterion="donsker")
        e_d = np.asarray(energy(params, t_data), np.float64)
        e_f = np.asarray(energy(params, t_fake), np.float64)
        est, se = float(kale.estimate(e_d, e_f)), _dv_standard_error(e_d, e_f)
        assert abs(est - closed) < 4 * se + 0.02, (energy.__name__, est, closed, se)
