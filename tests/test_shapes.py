"""Tests for kale_jax.data.shapes: rendering, the exact sampler, the fit and the exact metrics.

Statistical checks use fixed seeds; each bound is derived in a comment from the Monte-Carlo
error of the quantity (or is exact).
"""
import math

import jax
import ml_collections
import numpy as np
import pytest
from scipy import integrate, ndimage, stats

from kale_jax import data
from kale_jax.data import shapes
from kale_jax.errors import ConfigError
from configs import shapes as shapes_config

N_EXACT = 2000
# Supports of (cx, cy, r): cluster centres +- 3 std.
RANGES = [max(c[i] for c in shapes.CENTRES) - min(c[i] for c in shapes.CENTRES)
          + 2 * shapes.TRUNCATION * shapes.STDS[i] for i in range(3)]


@pytest.fixture(scope="module")
def exact():
    """N_EXACT exact images, their true parameters, and the fit of the images."""
    images, params = shapes.sample(jax.random.key(0), N_EXACT)
    fitted, residual = shapes.fit(images)
    return images, params, fitted, residual


@pytest.fixture(scope="module")
def exact_metrics(exact):
    return shapes.metrics(exact[0])


def test_render_hand_values():
    # Disc at (cx, cy) = (3, 5) (column 3, row 5), r = 2: the pixel at its centre is bright,
    # the transposed pixel (row 3, column 5) is 2 sqrt(2) > r + 2 px away (dark), a pixel at
    # distance exactly r is 0, and one at distance d has value 2 sigmoid((r - d) / 0.3) - 1.
    image = shapes.render(np.array([[3.0, 5.0, 2.0]]))[0, ..., 0]
    assert image.shape == (16, 16) and image.dtype == np.float32
    sigmoid = lambda u: 1.0 / (1.0 + math.exp(-u))
    np.testing.assert_allclose(image[5, 3], 2 * sigmoid(2 / 0.3) - 1, rtol=1e-6)
    assert image[5, 3] > 0.997
    np.testing.assert_allclose(image[5, 5], 0.0, atol=1e-6)  # distance 2 = r
    np.testing.assert_allclose(image[3, 5], 2 * sigmoid((2 - math.sqrt(8)) / 0.3) - 1,
                               rtol=1e-6)
    np.testing.assert_allclose(image[0, 15], -1.0, atol=1e-6)
    assert image.min() >= -1.0 and image.max() <= 1.0


def test_sample_is_exact_in_shape_range_and_seed(exact):
    images, params, _, _ = exact
    assert images.shape == (N_EXACT, 16, 16, 1) and images.dtype == np.float32
    assert params.shape == (N_EXACT, 3) and params.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, shapes.render(params))
    # Every draw lies in its cluster's box (truncation at 3 std).
    centres, stds = np.asarray(shapes.CENTRES), np.asarray(shapes.STDS)
    standardised = (params - centres[shapes.assign(params)]) / stds
    assert np.abs(standardised).max() <= shapes.TRUNCATION + 1e-5
    # Same key, same draws; the first m of n draws are the m draws; another key differs.
    again, again_params = shapes.sample(jax.random.key(0), 100)
    np.testing.assert_array_equal(again, images[:100])
    np.testing.assert_array_equal(again_params, params[:100])
    assert not np.array_equal(shapes.sample_params(jax.random.key(1), 100), params[:100])
    assert shapes.sample(jax.random.key(0), 0)[0].shape == (0, 16, 16, 1)


def test_clusters_are_separable_by_the_nearest_centre():
    """A box point is within 3 sqrt(3) standardised units of its centre, so nearest-centre
    assignment is exact when every two centres are more than twice that apart."""
    centres = np.asarray(shapes.CENTRES) / np.asarray(shapes.STDS)
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert min(gaps) > 2 * shapes.TRUNCATION * math.sqrt(3)
    # The corners of every box are assigned to their own cluster.
    corners = np.array([[sx, sy, sr] for sx in (-1, 1) for sy in (-1, 1) for sr in (-1, 1)])
    for k, centre in enumerate(shapes.CENTRES):
        points = centre + shapes.TRUNCATION * corners * np.asarray(shapes.STDS)
        assert np.all(shapes.assign(points) == k)


def test_cluster_shares_and_within_cluster_moments(exact):
    params = exact[1].astype(np.float64)
    clusters = shapes.assign(params)
    # Counts ~ Multinomial(n, w): each share within 4 binomial standard errors.
    for k, weight in enumerate(shapes.WEIGHTS):
        share = np.mean(clusters == k)
        assert abs(share - weight) < 4 * math.sqrt(weight * (1 - weight) / N_EXACT), k
    # Standardised deviations: N(0, 1) truncated to [-3, 3], mean 0, variance
    # 1 - 6 phi(3) / (2 Phi(3) - 1) = 0.9733; over n = 2000 x 3 values the mean has standard
    # error sqrt(0.9733 / 6000) = 0.0127 (4 se: 0.051) and the variance about
    # sqrt((m4 - v^2) / 6000) < sqrt(2 / 6000) = 0.018 (4 se: 0.073).
    z = (params - np.asarray(shapes.CENTRES)[clusters]) / np.asarray(shapes.STDS)
    variance = 1 - 6 * stats.norm.pdf(3) / (2 * stats.norm.cdf(3) - 1)
    assert abs(z.mean()) < 0.051
    assert abs(z.var() - variance) < 0.073


def test_fit_recovers_exact_renderings(exact):
    _, params, fitted, residual = exact
    # Stated accuracy of the fit on exact (float32) renderings: < 1e-6 px, residual < 1e-6.
    np.testing.assert_allclose(fitted, params, atol=1e-5)
    assert residual.max() < 1e-6
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 1\)"):
        shapes.fit(np.zeros((3, 16, 16)))


def test_fit_is_the_least_squares_fit_under_pixel_noise(exact):
    """With Gaussian pixel noise of std s added to exact renderings, a least-squares fit of the
    3 parameters leaves residual sum of squares ~ s^2 chi^2_{P - 3} (P = 256 pixels, to first
    order in s), so mean(residual^2) over n images estimates s^2 (P - 3) / P with relative
    standard error sqrt(2 (P - 3) / n) / (P - 3) = 0.40 % for n = 500: 4 se = 1.6 %. A fit
    stopping short of the minimum leaves more, one overfitting is impossible with 3
    parameters."""
    images, params = exact[0][:500], exact[1][:500]
    s, p = 0.02, 256
    noisy = images + s * np.random.default_rng(0).standard_normal(images.shape)
    fitted, residual = shapes.fit(noisy)
    np.testing.assert_allclose(np.mean(residual**2), s**2 * (p - 3) / p, rtol=0.016)
    assert np.all(residual < shapes.VALID_THRESHOLD)
    # Parameters move by O(s / sqrt(edge pixels)): well under a tenth of a pixel.
    assert np.abs(fitted - params).max() < 0.1


def test_exact_samples_pass_with_metrics_at_the_noise_floor(exact_metrics):
    """valid_share is 1 (exact renderings fit to < 1e-6, threshold 0.05).

    cluster_kl: the nearest-cluster histogram of n exact samples is Multinomial(n, w) / n (the
    boxes are separable, module docstring) and 2 n KL -> chi^2_3; its 0.999 quantile 16.27
    gives KL < 16.27 / (2 n) = 0.0041 with probability ~0.999.

    param_w1: E W1_p = int E|F_n - F| <= int sqrt(F (1 - F) / n) (Jensen) =
    sqrt(pi / 2) * noise_floor; changing one sample moves W1_p by at most the support's width
    R_p / n, so by McDiarmid P(mean_p W1_p > E + t) <= delta for
    t = mean_p(R_p) sqrt(log(1 / delta) / (2 n)); delta = 1e-3.
    """
    assert exact_metrics["valid_share"] == 1.0
    assert 0.0 <= exact_metrics["cluster_kl"] < stats.chi2.ppf(0.999, 3) / (2 * N_EXACT)
    floor = shapes.noise_floor(N_EXACT)
    assert floor["cluster_kl"] == 3 / (2 * N_EXACT)
    bound = math.sqrt(math.pi / 2) * floor["param_w1"] + np.mean(RANGES) * math.sqrt(
        math.log(1e3) / (2 * N_EXACT))
    assert 0.0 < exact_metrics["param_w1"] < bound


@pytest.mark.parametrize("cluster", [0, 3])
def test_one_cluster_gives_the_known_cluster_kl(cluster, exact_metrics):
    """All samples from cluster k: the histogram is e_k and KL(e_k || w) = log(1 / w_k) exactly;
    the parameter marginals are far from the mixture's (W1 several times the exact bound)."""
    weights = np.eye(shapes.NUM_CLUSTERS)[cluster]
    images, _ = shapes.sample(jax.random.key(5), 300, weights=weights)
    result = shapes.metrics(images)
    assert result["valid_share"] == 1.0
    np.testing.assert_allclose(result["cluster_kl"], math.log(1 / shapes.WEIGHTS[cluster]),
                               rtol=1e-12)
    assert result["param_w1"] > 1.0 > 3 * exact_metrics["param_w1"]


def test_param_w1_matches_an_independent_integral():
    """All parameters at one point c: W1_p = E|X_p - c_p|, integrated here with scipy's truncnorm
    (independent of the module's CDF and grid; grid error < 0.001 px)."""
    point = np.array([6.0, 8.0, 2.8])
    expected = []
    for p in range(3):
        total = 0.0
        for weight, centre in zip(shapes.WEIGHTS, shapes.CENTRES):
            law = stats.truncnorm(-3, 3, loc=centre[p], scale=shapes.STDS[p])
            lower, upper = law.support()
            total += weight * integrate.quad(lambda x: abs(x - point[p]) * law.pdf(x), lower,
                                             upper, points=[point[p]])[0]
        expected.append(total)
    assert shapes.param_w1(np.tile(point, (7, 1))) == pytest.approx(np.mean(expected), abs=1e-3)


def _different_cluster_pairs(exact):
    images, params = exact[0], exact[1]
    clusters = shapes.assign(params)
    first, second = images[:300], images[300:600]
    keep = clusters[:300] != clusters[300:600]
    return first[keep], second[keep]


def test_blends_blur_and_noise_are_invalid(exact):
    """Calibration margins (module docstring): two-disc means / unions of different clusters
    leave residuals >= 0.18, blur of 1 px >= 0.094, blank frames 0.094, noise ~1 (threshold
    0.05)."""
    first, second = _different_cluster_pairs(exact)
    blurred = ndimage.gaussian_filter(exact[0][:300], sigma=(0, 1, 1, 0), mode="nearest")
    noise = np.random.default_rng(1).uniform(-1, 1, (50, 16, 16, 1))
    cases = {"mean of two": (first + second) / 2, "union of two": np.maximum(first, second),
             "blur 1 px": blurred, "uniform noise": noise, "blank": -np.ones((2, 16, 16, 1)),
             "all bright": np.ones((2, 16, 16, 1))}
    for name, images in cases.items():
        _, residual = shapes.fit(images)
        assert residual.min() > 1.5 * shapes.VALID_THRESHOLD, name
    result = shapes.metrics(np.concatenate([cases["mean of two"], cases["blur 1 px"]]))
    assert result["valid_share"] == 0.0
    assert math.isnan(result["cluster_kl"]) and math.isnan(result["param_w1"])


def test_metrics_count_only_valid_images(exact):
    """Half exact images, half blends: valid_share 1/2 and the other metrics those of the
    exact half; a non-finite image is invalid, never an error."""
    first, second = _different_cluster_pairs(exact)
    n = first.shape[0]
    exact_images = exact[0][1000:1000 + n]
    mixed = np.concatenate([exact_images, (first + second) / 2])
    mixed[0, 3, 3, 0] = np.nan
    result = shapes.metrics(mixed)
    reference = shapes.metrics(exact_images[1:])
    assert result["valid_share"] == pytest.approx((n - 1) / (2 * n))
    assert result["cluster_kl"] == pytest.approx(reference["cluster_kl"], abs=1e-9)
    assert result["param_w1"] == pytest.approx(reference["param_w1"], abs=1e-9)


def test_registered_as_a_sampled_image_set(exact):
    config = ml_collections.ConfigDict(dict(name="shapes", data_dir=""))
    assert "shapes" in data.EMBEDDED_DATASETS
    assert data.get_info(config) == data.DatasetInfo("shapes", (16, 16, 1), "image")
    dataset = data._REGISTRY["shapes"]  # pylint: disable=protected-access
    assert dataset.metric_goals == {"valid_share": "max", "cluster_kl": "min",
                                    "param_w1": "min"}
    images = exact[0][:200]
    assert dataset.exact_metrics(config, images) == shapes.metrics(images)
    # Training batches are exact samples, seed-determined; the test split is another stream.
    batch = next(data.train_batches(config, batch_size=32, seed=3))
    assert shapes.metrics(batch)["valid_share"] == 1.0
    np.testing.assert_array_equal(batch, next(data.train_batches(config, batch_size=32, seed=3)))
    assert not np.array_equal(batch, next(data.train_batches(config, batch_size=32, seed=4)))
    test = data.eval_examples(config, split="test", num_examples=32, seed=3)
    assert not np.array_equal(test, batch)
    # data.image_size may only be 16.
    with pytest.raises(ValueError, match=r"data.image_size=32 is not one of \(16,\)"):
        data.get_info(ml_collections.ConfigDict(dict(name="shapes", image_size=32)))
    with pytest.raises(ValueError, match=r"data.image_size"):
        dataset.exact_metrics(ml_collections.ConfigDict(dict(name="shapes", image_size=8)),
                              images)


def test_config_validates_and_rejects_other_image_sizes():
    from kale_jax.train.validate import validate  # pylint: disable=g-import-not-at-top
    config = shapes_config.get_config()
    validate(config, num_devices=2)
    assert config.data.name == "shapes" and config.model.latent_dim == 8
    config.data.image_size = 32
    with pytest.raises(ConfigError, match=r"config\.data\.image_size=32 is not one of \(16,\)"):
        validate(config, num_devices=2)
    config = shapes_config.get_config()
    config.model.generator = "sngan"  # 16x16 is the DCGAN pair's alone
    with pytest.raises(ConfigError, match=r"not supported by config.model.generator='sngan'"):
        validate(config, num_devices=2)
