"""Tests of kale_jax.metrics.fid: Frechet distance against closed forms, KID's bias and power."""
import numpy as np
import pytest
import scipy.stats

from kale_jax.metrics import fid


def _spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # shared eigenvectors: S1 and S2 commute
    s1, s2 = q @ np.diag(v1) @ q.T, q @ np.diag(v2) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-8)


def test_frechet_distance_closed_form_against_a_scaled_identity():
    # tr((c I S)^{1/2}) = sqrt(c) sum_i sqrt(lambda_i(S)) for any SPD S (non-diagonal).
    rng = np.random.default_rng(1)
    d, c = 8, 2.5
    s = _spd(rng, d)
    mu = rng.normal(size=d)
    expected = mu @ mu + c * d + np.trace(s) - 2 * np.sqrt(c) * np.sum(np.sqrt(np.linalg.eigvalsh(s)))
    np.testing.assert_allclose(fid.frechet_distance(np.zeros(d), c * np.eye(d), mu, s), expected,
                               rtol=1e-8)
    # Symmetric, zero on equal statistics, and the Gaussian-statistics helper is np.cov's.
    np.testing.assert_allclose(fid.frechet_distance(mu, s, np.zeros(d), c * np.eye(d)), expected,
                               rtol=1e-8)
    assert fid.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    x = rng.normal(size=(50, d))
    stats = fid.gaussian_statistics(x)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False))
    assert stats.n == 50


def test_frechet_distance_is_stable_for_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances, as with few images and 2048
    # features. Result is finite, >= 0, and close to the value with a tiny ridge added.
    rng = np.random.default_rng(2)
    d = 64
    a = fid.gaussian_statistics(rng.normal(size=(20, d)))
    b = fid.gaussian_statistics(rng.normal(size=(20, d)) + 0.5)
    value = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    ridge = 1e-9 * np.eye(d)
    reference = fid.frechet_distance(a.mu, a.sigma + ridge, b.mu, b.sigma + ridge)
    assert np.isfinite(value) and value > 0
    np.testing.assert_allclose(value, reference, rtol=1e-4)
    with pytest.raises(ValueError, match="statistics must be"):
        fid.frechet_distance(a.mu, a.sigma, b.mu[:3], b.sigma)


def test_polynomial_mmd2_matches_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    xx = np.mean([k(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    yy = np.mean([k(y[i], y[j]) for i in range(4) for j in range(4) if i != j])
    xy = np.mean([k(a, b) for a in x for b in y])
    np.testing.assert_allclose(fid.polynomial_mmd2(x, y), xx + yy - 2 * xy, rtol=1e-10)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_different_ones():
    rng = np.random.default_rng(4)
    d, n = 16, 4000
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    same = fid.kid(x, y, num_subsets=20, subset_size=200)
    assert same.num_subsets == 20 and same.subset_size == 200
    # Disjoint subsets (20 * 200 <= 4000): independent estimates, a t-test of mean 0 applies.
    assert abs(same.mean) < 3 * same.standard_error
    np.testing.assert_allclose(same.standard_error, same.std / np.sqrt(20))
    shifted = fid.kid(x, y + 0.3, num_subsets=20, subset_size=200)
    assert shifted.mean > 10 * shifted.standard_error
    # A larger shift gives a larger discrepancy.
    larger = fid.kid(x, y + 0.6, num_subsets=20, subset_size=200)
    assert larger.mean > shifted.mean > 0
    # Overlapping (random) subsets when the sets are too small for disjoint ones.
    small = fid.kid(x[:300], y[:300], num_subsets=10, subset_size=100, seed=1)
    assert small.subset_size == 100 and np.isfinite(small.standard_error)


def test_kid_false_positive_rate_is_controlled_over_seeds():
    # Over independent pairs of same-distribution samples the t statistic of the disjoint-subset
    # mean exceeds its two-sided 99.7% quantile with probability 0.003; allowing one such seed
    # in 10 leaves a spurious failure probability of about 45 * 0.003^2 = 4e-4.
    failures = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        k = fid.kid(rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8)), num_subsets=10,
                    subset_size=100)
        t = k.mean / k.standard_error
        failures += abs(t) > scipy.stats.t.ppf(0.9985, df=9)
    assert failures <= 1
