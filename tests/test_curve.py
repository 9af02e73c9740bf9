"""Tests for kale_jax.data.curve: geometry, the law along the curve, exact samples and metrics.

Monte-Carlo bounds use the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant, valid
for every n: P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2). With failure probability 1e-3,
eps = sqrt(log(2000) / (2 n)) = 1.9495 / sqrt(n) (the Kolmogorov distribution's 0.999 quantile,
1.9495, is the same number). The seeds are fixed, so each bound is one draw that holds with
probability >= 0.999, not a flaky test.
"""
import math
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from scipy import integrate, stats

from kale_jax import data
from kale_jax.data import curve
from kale_jax.errors import ConfigError

CURVE = curve.CURVE
L = CURVE.length
DKW = math.sqrt(math.log(2 / 1e-3) / 2)  # 1.9495: sup |F_n - F| <= DKW / sqrt(n) w.p. 0.999
N = 20000


def quad(function, low, high, points=None):
    value, _ = integrate.quad(function, low, high, epsabs=1e-13, epsrel=1e-13, limit=500,
                              points=points)
    return value


def config(**kwargs):
    return ml_collections.ConfigDict(dict(name="curve", data_dir=None, **kwargs))


@pytest.fixture(scope="module")
def exact_t():
    return curve.sample_t(np.random.default_rng(0), N)


# ---------------------------------------------------------------------------------------------
# Geometry.

def test_point_velocity_normal_and_curvature():
    t = np.linspace(0.0, 1.0, 1001)
    step = 1e-6
    finite_difference = (CURVE.point(t + step) - CURVE.point(t - step)) / (2 * step)
    np.testing.assert_allclose(CURVE.velocity(t), finite_difference, atol=1e-6)
    np.testing.assert_allclose(CURVE.speed(t), np.linalg.norm(CURVE.velocity(t), axis=1))
    assert CURVE.speed(t).min() == pytest.approx(4.0)
    assert CURVE.speed(t).max() == pytest.approx(math.hypot(4.0, 1.8 * math.pi))
    normal = CURVE.normal(t)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(normal * CURVE.velocity(t), axis=1), 0.0, atol=1e-12)
    # sin(3 pi / 2) = -1 and sin(3 pi) = 0: c(1/2) = (0, -0.6), c(1) = (2, 0).
    np.testing.assert_allclose(CURVE.point([0.0, 0.5, 1.0]), [[-2, 0], [0, -0.6], [2, 0]],
                               atol=1e-12)
    # Data within the toys' box [-2.5, 2.5]^2.
    assert np.all(np.abs(CURVE.point(t)) <= 2.0 + 1e-12)


def test_arc_length_is_exact():
    speed = lambda u: float(CURVE.speed(u))
    for t in (0.0, 0.1, 1 / 6, 0.37, 0.5, 0.77, 1.0):
        np.testing.assert_allclose(CURVE.arc_length(t), quad(speed, 0.0, t), rtol=1e-13,
                                   atol=1e-14)
    assert L == pytest.approx(5.5617198, abs=1e-7)
    # Straight segment (amplitude 0): s(t) = width t, length = width, in closed form.
    line = curve.WavyCurve(width=3.0, amplitude=0.0)
    np.testing.assert_allclose(line.arc_length(np.linspace(0, 1, 11)), 3.0 * np.linspace(0, 1, 11))
    assert line.length == 3.0
    # Another wave, y = sin(2 pi x) on [0, 1], against quadrature.
    wave = curve.WavyCurve(width=1.0, amplitude=1.0, omega=2 * math.pi)
    assert wave.length == pytest.approx(
        quad(lambda u: math.sqrt(1 + (2 * math.pi * math.cos(2 * math.pi * u)) ** 2), 0, 1),
        rel=1e-13)


def test_t_of_arc_length_inverts_arc_length():
    t = np.random.default_rng(1).uniform(size=1000)
    np.testing.assert_allclose(CURVE.t_of_arc_length(CURVE.arc_length(t)), t, atol=1e-13)
    assert CURVE.t_of_arc_length(0.0) == 0.0 and CURVE.t_of_arc_length(L) == 1.0
    # A curve whose speed varies 6-fold (plain Newton can overshoot; the bracket keeps it safe).
    wave = curve.WavyCurve(width=1.0, amplitude=1.0, omega=2 * math.pi)
    np.testing.assert_allclose(wave.t_of_arc_length(wave.arc_length(t)), t, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# The law along the curve.

def test_t_law_is_a_normalised_three_mode_density():
    assert sum(w for w, _, _ in curve.T_MIXTURE) == pytest.approx(1.0)
    assert quad(curve.t_pdf, 0.0, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert curve.t_cdf(0.0) == 0.0 and curve.t_cdf(1.0) == pytest.approx(1.0, abs=1e-15)
    for t in (0.05, 0.3, 0.62, 0.9):
        assert curve.t_cdf(t) == pytest.approx(quad(curve.t_pdf, 0.0, t), abs=1e-12)
    # scipy.stats.beta agrees with our pdf.
    t = np.linspace(0.01, 0.99, 99)
    reference = sum(w * stats.beta.pdf(t, a, b) for w, a, b in curve.T_MIXTURE)
    np.testing.assert_allclose(curve.t_pdf(t), reference, rtol=1e-10)
    assert curve.t_pdf(-0.1) == 0.0 and curve.t_pdf(1.1) == 0.0
    # Modes at the crests / trough t = 1/6, 1/2, 5/6; the density between modes drops below a
    # sixth of the lowest mode's height: clearly multimodal.
    grid = np.linspace(0.0, 1.0, 60001)
    pdf = curve.t_pdf(grid)
    peaks = grid[1:-1][(pdf[1:-1] > pdf[:-2]) & (pdf[1:-1] > pdf[2:])]
    np.testing.assert_allclose(peaks, [1 / 6, 1 / 2, 5 / 6], atol=2e-4)
    lowest_peak = curve.t_pdf(peaks).min()
    for low, high in ((1 / 6, 1 / 2), (1 / 2, 5 / 6)):
        between = (grid > low) & (grid < high)
        assert pdf[between].min() < lowest_peak / 6


def test_arc_length_law():
    assert quad(curve.arc_pdf, 0.0, L, points=[L / 6, L / 2, 5 * L / 6]) == pytest.approx(
        1.0, abs=1e-10)
    for s in (0.4, 1.9, 3.3, 5.0):
        assert curve.arc_cdf(s) == pytest.approx(quad(curve.arc_pdf, 0.0, s), abs=1e-10)
    t = np.array([0.2, 0.5, 0.8])
    np.testing.assert_allclose(curve.arc_pdf(CURVE.arc_length(t)),
                               curve.t_pdf(t) / CURVE.speed(t), rtol=1e-12)
    assert curve.arc_pdf(-0.1) == 0.0 and curve.arc_pdf(L + 0.1) == 0.0


# ---------------------------------------------------------------------------------------------
# Exact samples.

def test_samples_lie_on_the_curve_and_are_key_determined():
    key = jax.random.key(3)
    samples = curve.sample(key, 5000)
    assert samples.shape == (5000, 2) and samples.dtype == np.float32
    _, distance = CURVE.project(samples)
    assert distance.max() < 1e-5  # float32 rounding of the coordinates only
    np.testing.assert_array_equal(samples, curve.sample(key, 5000))
    assert not np.array_equal(samples, curve.sample(jax.random.key(4), 5000))
    np.testing.assert_array_equal(curve.sample(np.random.default_rng(5), 7),
                                  curve.sample(np.random.default_rng(5), 7))
    assert curve.sample(key, 0).shape == (0, 2)


def test_noise_has_its_std_normal_to_the_curve():
    """With std 1e-3 (far below the reach 0.3) the distance is |normal noise|: mean
    sigma sqrt(2 / pi), std sigma sqrt(1 - 2 / pi) = 0.603 sigma, so the mean of N = 20000 has
    relative standard error 0.603 / 0.798 / sqrt(N) = 0.53%; 3% allows 5.6 standard errors and
    the O(sigma kappa) = 0.3% curvature effect."""
    sigma = 1e-3
    _, distance = CURVE.project(curve.sample(jax.random.key(6), N, noise=sigma))
    assert np.mean(distance) == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.03)


# ---------------------------------------------------------------------------------------------
# Projection.

def test_projection_recovers_t_and_is_never_worse_than_brute_force():
    t = np.concatenate([[0.0, 1.0], np.random.default_rng(7).uniform(size=2000)])
    t_star, distance = CURVE.project(CURVE.point(t))
    np.testing.assert_allclose(t_star, t, atol=1e-7)
    assert distance.max() < 1e-10
    points = np.random.default_rng(8).uniform(-3.0, 3.0, (100, 2))
    t_star, distance = CURVE.project(points)
    np.testing.assert_allclose(distance, np.linalg.norm(CURVE.point(t_star) - points, axis=1),
                               rtol=1e-12)
    # Brute force on 100001 nodes: its distance is too large by at most h^2 / (8 D) (1 + kappa D)
    # with h = 6.93 / 100000 = 6.9e-5, i.e. < 1.3e-7 for D > 0.005 (these points: D > 0.0063).
    assert distance.min() > 0.005
    nodes = CURVE.point(np.linspace(0.0, 1.0, 100001))
    brute = np.array([np.sqrt(np.min(np.sum((nodes - p) ** 2, axis=1))) for p in points])
    assert np.all(distance <= brute + 1e-12)
    assert np.all(brute - distance <= 1.3e-7)


def test_projection_of_far_and_non_finite_points():
    t_star, distance = CURVE.project(np.array([[-5.0, 0.0], [6.0, 0.0], [np.nan, 0.0],
                                               [0.0, np.inf]]))
    np.testing.assert_allclose(t_star[:2], [0.0, 1.0], atol=1e-9)  # beyond the ends
    np.testing.assert_allclose(distance[:2], [3.0, 4.0], rtol=1e-12)
    assert np.all(np.isnan(t_star[2:])) and np.all(np.isinf(distance[2:]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        CURVE.project(np.zeros((3, 3)))


@pytest.mark.parametrize("offset", [0.1, -0.1, 0.04, 0.29, -0.29])
def test_normal_offsets_project_back_within_the_reach(offset, exact_t):
    """c(t) + r n(t) with |r| below the reach 0.3 has nearest point c(t), at distance |r|:
    exactly, with no curvature correction (the 'up to curvature' only matters beyond it)."""
    t = exact_t[:5000]
    points = CURVE.point(t) + offset * CURVE.normal(t)
    t_star, distance = CURVE.project(points)
    np.testing.assert_allclose(t_star, t, atol=1e-7)
    np.testing.assert_allclose(distance, abs(offset), rtol=1e-12)
    result = curve.metrics(points)
    assert result["curve_distance"] == pytest.approx(abs(offset), rel=1e-12)
    assert result["on_curve_share"] == (1.0 if abs(offset) <= curve.ON_CURVE_TOLERANCE else 0.0)
    # The arc metrics see the projections, i.e. t itself.
    assert result["arc_ks"] == pytest.approx(curve.arc_ks(t), abs=1e-7)
    assert result["arc_w1"] == pytest.approx(curve.arc_w1(t), abs=1e-6)


def test_the_reach_is_the_crests_radius_of_curvature():
    """The crest c(1/6) = (-4/3, 0.6) bends down with radius of curvature 4^2 / (0.6 (3 pi)^2)
    = 0.300: below it, by less than that, the crest is the nearest point; beyond the centre of
    curvature it is not."""
    crest = np.array([1 / 6])
    np.testing.assert_allclose(CURVE.normal(crest), [[0.0, 1.0]], atol=1e-12)
    for depth, nearest_is_crest in ((0.29, True), (0.32, False)):
        t_star, _ = CURVE.project(CURVE.point(crest) - depth * CURVE.normal(crest))
        assert (abs(t_star[0] - 1 / 6) < 1e-6) == nearest_is_crest


# ---------------------------------------------------------------------------------------------
# Metrics.

def test_exact_samples_score_within_monte_carlo_error():
    """KS: the DKW bound. W1 = integral |F_n - F| ds <= L sup |F_n - F|, so the same event bounds
    it by L DKW / sqrt(n) = 0.077 (n = 20000). (Its mean is smaller: at most J / sqrt(n),
    J = integral sqrt(F (1 - F)) ds, by Cauchy-Schwarz on E|F_n - F|; here J / sqrt(n) = 0.014.
    Bounded differences L / n give only a McDiarmid bound (J + 1.86 L) / sqrt(n), no tighter
    than DKW's.) Lower check: P(sqrt(n) KS < 0.3) ~ 1e-5 under the Kolmogorov law, so a
    statistic stuck at 0 fails."""
    samples = curve.sample(jax.random.key(9), N)
    result = curve.metrics(samples)
    assert set(result) == set(curve.METRIC_GOALS)
    assert result["curve_distance"] < 1e-6 and result["on_curve_share"] == 1.0
    assert 0.3 / math.sqrt(N) < result["arc_ks"] < DKW / math.sqrt(N)
    assert 0.0 < result["arc_w1"] < L * DKW / math.sqrt(N)


def test_arc_w1_matches_scipy_against_exact_quantiles(exact_t):
    """scipy's W1 between our points' arc lengths and M = 200000 quantiles s(F_T^-1((i - 1/2)/M))
    of the true law. The quantile set is itself within L / M = 2.8e-5 of the true law (each
    of its M cells moves mass 1 / M by at most the cell's range, and the ranges sum to <= L);
    F_T^-1 by interpolation on 10^6 nodes adds < 7e-6."""
    nodes = np.linspace(0.0, 1.0, 1000001)
    levels = (np.arange(200000) + 0.5) / 200000
    quantiles = CURVE.arc_length(np.interp(levels, curve.t_cdf(nodes), nodes))
    for t in (exact_t[:2000], CURVE.t_of_arc_length(np.linspace(0, L, 3000)), exact_t[:50] ** 2):
        reference = stats.wasserstein_distance(CURVE.arc_length(t), quantiles)
        assert curve.arc_w1(t) == pytest.approx(reference, abs=4e-5)


def test_point_masses_have_closed_form_distances():
    """All samples at c(0): F_n = 1 on [0, L], so W1 = integral (1 - F) = E[S] and KS = 1; all at
    c(1): W1 = L - E[S]. E[S] = integral s(t) p_T(t) dt by quadrature."""
    mean_s = quad(lambda t: float(CURVE.arc_length(t) * curve.t_pdf(t)), 0.0, 1.0)
    assert curve.arc_w1(np.zeros(10)) == pytest.approx(mean_s, abs=1e-7)
    assert curve.arc_w1(np.ones(10)) == pytest.approx(L - mean_s, abs=1e-7)
    assert curve.arc_ks(np.zeros(10)) == 1.0 and curve.arc_ks(np.ones(10)) == 1.0
    # Half at each end: F_n = 1/2 on [0, L): W1 = integral |1/2 - F|.
    half = quad(lambda t: abs(0.5 - float(curve.t_cdf(t))) * float(CURVE.speed(t)), 0.0, 1.0,
                points=[0.4, 0.5, 0.6])
    assert curve.arc_w1(np.repeat([0.0, 1.0], 5)) == pytest.approx(half, abs=1e-7)


def test_a_density_spread_evenly_along_the_curve_scores_its_known_distance():
    """Uniform in arc length (what a GAN that finds the support but not the density gives):
    W1 = integral |s / L - F_S(s)| ds and KS = sup |s / L - F_S(s)|, computed in t. The sample's
    own error is at most L DKW / sqrt(n) for W1 (triangle inequality) and DKW / sqrt(n) for KS."""
    t = np.linspace(0.0, 1.0, 200001)
    gap = CURVE.arc_length(t) / L - curve.t_cdf(t)
    true_ks = np.max(np.abs(gap))
    true_w1 = np.trapezoid(np.abs(gap) * CURVE.speed(t), t)  # error ~1e-9 at this spacing
    s = np.random.default_rng(10).uniform(0.0, L, N)
    result = curve.metrics(CURVE.point(CURVE.t_of_arc_length(s)))
    assert result["on_curve_share"] == 1.0
    assert result["arc_ks"] == pytest.approx(true_ks, abs=DKW / math.sqrt(N))
    assert result["arc_w1"] == pytest.approx(true_w1, abs=L * DKW / math.sqrt(N))
    # Far from the exact samples' values: the metrics tell the two apart.
    assert true_ks > 10 * DKW / math.sqrt(N) and true_w1 > 5 * L * DKW / math.sqrt(N)


def test_arc_w1_grid_error_is_below_its_bound(exact_t):
    """The default grid (2^14 cells) is within the stated 4e-7 of a 4x finer one, and a 2x
    coarser one within 4 times that (the bound scales as h^2)."""
    t = exact_t[:3000]
    values = [curve.arc_w1(t, grid_size=g) for g in (1 << 13, 1 << 14, 1 << 16)]
    assert abs(values[1] - values[2]) < 4e-7 and abs(values[0] - values[2]) < 1.6e-6


def test_metrics_of_non_finite_and_bad_samples():
    samples = np.concatenate([CURVE.point(np.array([0.2, 0.4, 0.6])), [[np.nan, 0.0]]])
    result = curve.metrics(samples)
    assert result["curve_distance"] == math.inf
    assert result["on_curve_share"] == 0.75
    assert result["arc_ks"] == pytest.approx(curve.arc_ks([0.2, 0.4, 0.6]), abs=1e-7)
    result = curve.metrics(np.full((2, 2), np.nan))
    assert result["curve_distance"] == math.inf and math.isnan(result["arc_w1"])
    for bad in (np.zeros((0, 2)), np.zeros((4, 3)), np.zeros(4)):
        with pytest.raises(ValueError, match="samples"):
            curve.metrics(bad)


# ---------------------------------------------------------------------------------------------
# Registry and config.

def test_registry_entry():
    assert "curve" in data.EMBEDDED_DATASETS
    assert data.get_info(config()) == data.DatasetInfo("curve", (2,), "vector")
    first = next(data.train_batches(config(), batch_size=64, seed=0))
    again = next(data.train_batches(config(), batch_size=64, seed=0))
    other = next(data.train_batches(config(), batch_size=64, seed=1))
    assert first.shape == (64, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    test = data.eval_examples(config(), num_examples=500)
    np.testing.assert_array_equal(test, data.eval_examples(config(), num_examples=500))
    assert CURVE.project(np.concatenate([first, test]))[1].max() < 1e-5
    noisy = data.eval_examples(config(noise=0.01), num_examples=500)
    assert 0.004 < np.mean(CURVE.project(noisy)[1]) < 0.012  # 0.01 sqrt(2/pi) = 0.008
    entry = data._REGISTRY["curve"]  # pylint: disable=protected-access
    assert dict(entry.metric_goals) == curve.METRIC_GOALS
    assert set(entry.exact_metrics(config(), test)) == set(curve.METRIC_GOALS)
    assert data._REGISTRY["sphere3d"].exact_metrics is None  # pylint: disable=protected-access


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "big", True])
def test_bad_noise_is_one_clear_config_error(value):
    for function in (data.get_info,
                     lambda c: data.train_batches(c, batch_size=8, seed=0),
                     lambda c: data.eval_examples(c, num_examples=8)):
        with pytest.raises(ConfigError, match=r"config\.data\.noise=.*>= 0.*0\.0"):
            function(config(noise=value))


def test_config_is_valid():
    from configs import curve as curve_config  # pylint: disable=g-import-not-at-top
    from kale_jax.train.validate import validate  # pylint: disable=g-import-not-at-top
    config_ = curve_config.get_config()
    validate(config_, num_devices=1)
    assert (config_.data.name, config_.model.latent_dim, config_.train.batch_size) == (
        "curve", 1, 256)


# ---------------------------------------------------------------------------------------------
# Pictures.

def test_plot_panel_and_save_panels(tmp_path):
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    samples = curve.sample(jax.random.key(11), 300)
    fig, ax = plt.subplots()
    curve.plot_panel(ax, samples, "truth")
    assert len(ax.lines) == 1 and len(ax.collections) == 1 and ax.get_title() == "truth"
    np.testing.assert_allclose(ax.lines[0].get_xydata()[[0, -1]], [[-2, 0], [2, 0]], atol=1e-12)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), samples, rtol=1e-6)
    plt.close(fig)
    path = tmp_path / "panels.png"
    curve.save_panels(str(path), {"truth": samples, "GAN": samples + 0.1, "GEBM": samples,
                                  "EBM": samples}, title="curve")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matplotlib_is_imported_lazily():
    code = "import sys, kale_jax.data.curve; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
