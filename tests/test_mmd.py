"""Tests for kale_jax.metrics.mmd: exact formula, unbiasedness, a closed form, symmetry, errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from kale_jax.metrics import mmd


def reference_mmd2(x, y, bandwidths):
    """Direct float64 O(N^2) unbiased MMD^2 with the mixture kernel."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)

    def kernel(a, b):
        squared = cdist(a, b, "sqeuclidean")
        return np.mean([np.exp(-squared / (2 * s**2)) for s in bandwidths], axis=0)

    m, n = len(x), len(y)
    kxx, kyy = kernel(x, x), kernel(y, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return within_x + within_y - 2 * kernel(x, y).mean()


def gaussian_mmd2(mean_difference, std, dim, bandwidths):
    """MMD^2 between N(m1, s^2 I_d) and N(m2, s^2 I_d) under the mixture of Gaussian kernels.

    For one kernel k(a, b) = exp(-|a - b|^2 / (2 l^2)) and V ~ N(mu, t^2 I_d),
      E k = E exp(-|V|^2 / (2 l^2)) = (l^2 / (l^2 + t^2))^(d/2) exp(-|mu|^2 / (2 (l^2 + t^2)))
    (complete the square per coordinate). X - X' and Y - Y' are N(0, 2 s^2 I), X - Y is
    N(m1 - m2, 2 s^2 I), so with delta = |m1 - m2|:
      MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)
            = 2 (l^2 / (l^2 + 2 s^2))^(d/2) (1 - exp(-delta^2 / (2 (l^2 + 2 s^2)))),
    and the mixture's MMD^2 is the mean of these over its bandwidths (the kernel is linear).
    """
    values = [2 * (l**2 / (l**2 + 2 * std**2)) ** (dim / 2)
              * (1 - math.exp(-mean_difference**2 / (2 * (l**2 + 2 * std**2))))
              for l in bandwidths]
    return float(np.mean(values))


# Shared small samples (one shape pair, so most tests reuse one compilation).
_RNG = np.random.default_rng(0)
X = _RNG.standard_normal((37, 3)).astype(np.float32)
Y = (_RNG.standard_normal((23, 3)) * 1.5 + 0.7).astype(np.float32)
BANDWIDTHS = (0.5, 2.0)


def test_matches_direct_formula_for_any_block_size():
    expected = reference_mmd2(X, Y, BANDWIDTHS)
    for block_size in (5, 512):  # 5 pads the last block; 512 is one block
        value = mmd.mmd2(X, Y, bandwidths=BANDWIDTHS, block_size=block_size)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_flattens_trailing_axes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 4, 4, 1)).astype(np.float32)
    y = rng.standard_normal((30, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(mmd.mmd2(x, y, bandwidths=3.0),
                               reference_mmd2(x.reshape(20, 16), y.reshape(30, 16), (3.0,)),
                               rtol=1e-5, atol=1e-6)


def test_is_unbiased_under_the_null():
    """Mean of R estimates on pairs of samples of one distribution is 0 within 4 standard errors.

    The standard error is the estimates' standard deviation / sqrt(R). The test can fail: the
    biased (V-statistic) estimate has expectation (1/m)(1 - E k(X, X')) + (1/n)(1 - E k(Y, Y'))
    = (2/m)(1 - (l^2 / (l^2 + 2 s^2))^(d/2)) here, which we check is over twice the tolerance.
    """
    num_repeats, m, dim, bandwidth = 64, 50, 2, 1.0
    samples = np.random.default_rng(5).standard_normal((2, num_repeats, m, dim))
    # One vmapped call over the repeats (also checks that mmd2 works under vmap).
    estimates = np.asarray(jax.vmap(lambda x, y: mmd.mmd2(x, y, bandwidths=bandwidth))(
        samples[0], samples[1]), np.float64)
    tolerance = 4 * estimates.std(ddof=1) / math.sqrt(num_repeats)
    assert abs(estimates.mean()) < tolerance
    v_statistic_bias = (2 / m) * (1 - (bandwidth**2 / (bandwidth**2 + 2)) ** (dim / 2))
    assert v_statistic_bias > 2 * tolerance
    # Unbiased estimates scatter on both sides of 0 (the biased one is always >= 0).
    assert estimates.min() < 0 < estimates.max()


def test_matches_closed_form_for_two_gaussians():
    """Mean of R estimates matches the closed form within 4 standard errors, and is > 0."""
    num_repeats, n, dim, std, shift, bandwidths = 16, 400, 2, 1.0, 1.0, (1.0, 2.0)
    direction = np.array([0.6, 0.8])  # unit vector: |m1 - m2| = shift
    x, y = std * np.random.default_rng(6).standard_normal((2, num_repeats, n, dim))
    y = y + shift * direction
    estimates = np.asarray(jax.vmap(lambda a, b: mmd.mmd2(a, b, bandwidths=bandwidths))(x, y),
                           np.float64)
    expected = gaussian_mmd2(shift, std, dim, bandwidths)
    standard_error = estimates.std(ddof=1) / math.sqrt(num_repeats)
    assert abs(estimates.mean() - expected) < 4 * standard_error
    assert expected > 10 * standard_error  # clearly positive: the test separates P from Q


def test_is_symmetric():
    # Default bandwidths: the median heuristic must also be symmetric in (x, y).
    forward = mmd.mmd2(X, Y)
    np.testing.assert_allclose(forward, mmd.mmd2(Y, X), rtol=1e-5, atol=1e-7)
    assert forward > 0


def test_default_bandwidths_are_scaled_median_distance():
    median = np.median(pdist(np.concatenate([X, Y]).astype(np.float64)))
    np.testing.assert_allclose(mmd.median_bandwidth(X, Y), median, rtol=1e-5)
    np.testing.assert_allclose(mmd.mmd2(X, Y),
                               reference_mmd2(X, Y, median * np.array([0.5, 1.0, 2.0])),
                               rtol=1e-4, atol=1e-6)
    # max_points bounds the rows used from each input.
    np.testing.assert_allclose(mmd.median_bandwidth(X, Y, max_points=10),
                               np.median(pdist(np.concatenate([X[:10], Y[:10]]))), rtol=1e-5)


def test_large_offsets_do_not_lose_precision():
    # |x|^2 ~ 3e6 would swamp float32 distances of order 1 without centring.
    offset = np.float32(1000.0)
    np.testing.assert_allclose(mmd.mmd2(X + offset, Y + offset, bandwidths=BANDWIDTHS),
                               reference_mmd2(X + offset, Y + offset, BANDWIDTHS), atol=1e-4)


def test_jit_compatible():
    jitted = jax.jit(lambda a, b, s: mmd.mmd2(a, b, bandwidths=s))
    np.testing.assert_allclose(jitted(X, Y, jnp.asarray(BANDWIDTHS)),
                               reference_mmd2(X, Y, BANDWIDTHS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_shape,y_shape,kwargs,match", [
    ((10, 3), (10, 4), {}, "trailing"),
    ((1, 3), (10, 3), {}, "at least 2"),
    ((10, 3), (10, 3), dict(bandwidths=0.0), "bandwidths"),
    ((10, 3), (10, 3), dict(bandwidths=(1.0, -1.0)), "bandwidths"),
    ((10, 3), (10, 3), dict(bandwidths=()), "bandwidths"),
    ((10, 3), (10, 3), dict(block_size=0), "block_size"),
])
def test_rejects_bad_input(x_shape, y_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmd.mmd2(np.zeros(x_shape), np.ones(y_shape), **kwargs)


def test_reference_bandwidths_are_the_median_of_the_reference_alone():
    """Points 0, 1, 3, 6: halves {0, 1} and {3, 6}, pooled pairwise distances 1, 3, 6, 2, 5, 3,
    median (3 + 3) / 2 = 3, so the bandwidths are 3 x (0.5, 1, 2) = (1.5, 3, 6)."""
    reference = np.array([[0.0], [1.0], [3.0], [6.0]], np.float32)
    bandwidths = mmd.reference_bandwidths(reference)
    assert bandwidths.dtype == np.float32
    np.testing.assert_allclose(bandwidths, [1.5, 3.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(mmd.reference_bandwidths(reference, scales=(1.0,)), [3.0],
                               rtol=1e-6)


def test_mmd2_noise_matches_the_spread_of_true_vs_true_mmd():
    # Truth: the RMS of mmd2 over T = 200 pairs of fresh n-row draws of one Gaussian (mean 0 under
    # P = Q). The estimate uses one n-row reference and 32 splits. Both RMS estimates have a
    # relative standard error of about sqrt((kurtosis - 1) / (4 K)) with kurtosis ~ 6 for MMD^2's
    # weighted chi-square null: ~8% for K = 200 and ~25% (more, splits share rows) for K = 32, so
    # [0.6, 1.6] is about 2 standard errors; forgetting the n/2 -> n rescaling gives ~2x (fails).
    n, dim, bandwidths = 300, 2, np.asarray([0.5, 1.0, 2.0], np.float32)
    rng = np.random.RandomState(0)
    truth = math.sqrt(np.mean([
        float(mmd.mmd2(rng.randn(n, dim).astype(np.float32), rng.randn(n, dim).astype(np.float32),
                       bandwidths=bandwidths)) ** 2 for _ in range(200)]))
    reference = rng.randn(n, dim).astype(np.float32)
    estimate = mmd.mmd2_noise(reference, bandwidths=bandwidths, num_splits=32)
    assert 0.6 < estimate / truth < 1.6, (estimate, truth)
    # Rescaling to m rows per side: variance ∝ 1 / (m (m - 1)).
    quarter = mmd.mmd2_noise(reference, bandwidths=bandwidths, num_splits=32, num_samples=4 * n)
    assert quarter == pytest.approx(estimate * math.sqrt(n * (n - 1) / (4 * n * (4 * n - 1))))
    with pytest.raises(ValueError, match="at least 4 rows"):
        mmd.mmd2_noise(reference[:3], bandwidths=bandwidths)
