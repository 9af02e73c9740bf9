"""Tests of kale_jax.metrics.three_sample (the relative MMD test): the statistic against direct
MMD^2 estimates, the variance against the spread over repetitions, calibration and power."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from kale_jax import metrics
from kale_jax.metrics import three_sample


def _draw(rng, n, shift):
    return rng.normal(size=(n, 2)) + np.array([shift, 0.0])


def test_difference_is_the_difference_of_unbiased_mmd2_estimates():
    rng = np.random.default_rng(0)
    x, y, z = _draw(rng, 60, 0.0), _draw(rng, 50, 0.5), _draw(rng, 50, 1.0)
    bandwidths = (0.5, 1.0, 2.0)
    kernel = three_sample.gaussian_mixture_kernel(bandwidths)
    result = three_sample.relative_test(three_sample.set_sums(kernel, x, y),
                                        three_sample.set_sums(kernel, x, z))
    direct = [float(metrics.mmd2(jnp.asarray(x, jnp.float32), jnp.asarray(s, jnp.float32),
                                 bandwidths=bandwidths)) for s in (y, z)]
    np.testing.assert_allclose(result.difference, direct[0] - direct[1], rtol=1e-4, atol=1e-6)
    assert result.difference < 0 and 0 < result.p_value < 0.5 and result.std > 0
    # KID's kernel on features: the same identity by hand.
    k = three_sample.polynomial_kernel
    def mmd2(a, b):
        kaa, kbb = k(a, a), k(b, b)
        na, nb = len(a), len(b)
        return ((kaa.sum() - np.trace(kaa)) / (na * (na - 1)) + (kbb.sum() - np.trace(kbb))
                / (nb * (nb - 1)) - 2 * k(a, b).mean())
    result = three_sample.relative_test(three_sample.set_sums(k, x, y),
                                        three_sample.set_sums(k, x, z))
    np.testing.assert_allclose(result.difference, mmd2(x, y) - mmd2(x, z), rtol=1e-9)


def test_variance_matches_the_spread_and_p_values_are_calibrated_under_the_null():
    """Y and Z from one distribution (shifted from X's): D has mean 0, its estimated standard
    deviation matches the spread of D over R = 300 independent repetitions (the sample standard
    deviation of R normal draws has relative standard error 1/sqrt(2R) = 4%: tolerance 15%), and
    P(p < 0.1) = 0.1 within 3 binomial standard errors sqrt(0.1 * 0.9 / R) = 0.017."""
    rng = np.random.default_rng(1)
    kernel = three_sample.gaussian_mixture_kernel((0.5, 1.0, 2.0))
    reps, n = 300, 80
    results = []
    for _ in range(reps):
        x, y, z = _draw(rng, n, 0.0), _draw(rng, n, 0.7), _draw(rng, n, 0.7)
        results.append(three_sample.relative_test(three_sample.set_sums(kernel, x, y),
                                                  three_sample.set_sums(kernel, x, z)))
    d = np.array([r.difference for r in results])
    std = np.array([r.std for r in results])
    assert abs(np.std(d) / np.mean(std) - 1.0) < 0.15, (np.std(d), np.mean(std))
    assert abs(np.mean(d)) < 3 * np.std(d) / math.sqrt(reps)
    rejected = np.mean([r.p_value < 0.1 for r in results])
    assert abs(rejected - 0.1) < 3 * math.sqrt(0.09 / reps), rejected


def test_closer_sample_gets_a_small_p_value_and_the_reverse_a_large_one():
    rng = np.random.default_rng(2)
    kernel = three_sample.gaussian_mixture_kernel((1.0,))
    x, near, far = _draw(rng, 200, 0.0), _draw(rng, 200, 0.2), _draw(rng, 200, 1.0)
    sums_near = three_sample.set_sums(kernel, x, near)
    sums_far = three_sample.set_sums(kernel, x, far)
    assert three_sample.relative_test(sums_near, sums_far).p_value < 1e-3
    assert three_sample.relative_test(sums_far, sums_near).p_value > 1 - 1e-3
    with pytest.raises(ValueError, match="share one reference"):
        three_sample.relative_test(sums_near, three_sample.set_sums(kernel, x[:10], far))
