"""Tests for kale_jax.data.toys: centres, the mixture sampler and mode statistics."""
import itertools
import math

import jax
import ml_collections
import numpy as np
import pytest

from kale_jax.data import toys

# P(|N(0, s^2 I_2)| <= 3 s) = P(chi^2_2 <= 9) = 1 - exp(-9/2).
SHARE_WITHIN_3STD_2D = 1.0 - math.exp(-4.5)


def config(**kwargs):
    return ml_collections.ConfigDict(dict(data_dir=None, **kwargs))


def test_ring_centres():
    centres = toys.ring_centres(3.0)
    assert centres.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 3.0, rtol=1e-6)
    angles = np.mod(np.arctan2(centres[:, 1], centres[:, 0]), 2 * np.pi)
    np.testing.assert_allclose(np.sort(angles), 2 * np.pi * np.arange(8) / 8, atol=1e-6)


def test_grid_centres():
    centres = toys.grid_centres()
    assert centres.shape == (25, 2)
    expected = set(itertools.product((-2.0, -1.0, 0.0, 1.0, 2.0), repeat=2))
    assert {tuple(map(float, c)) for c in centres} == expected


def test_modes_reads_config_and_defaults():
    centres, std = toys.modes(config(name="ring"))
    np.testing.assert_allclose(centres, toys.ring_centres(2.0))
    assert std == 0.02
    centres, std = toys.modes(config(name="ring", radius=5.0, std=0.3))
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 5.0, rtol=1e-6)
    assert std == 0.3
    centres, std = toys.modes(config(name="grid"))
    assert centres.shape == (25, 2) and std == 0.05


@pytest.mark.parametrize("key,value", [("std", -0.1), ("std", 0.0), ("radius", float("nan")),
                                       ("radius", "big")])
def test_modes_rejects_bad_values(key, value):
    with pytest.raises(ValueError, match=f"data.{key}"):
        toys.modes(config(name="ring", **{key: value}))


def test_modes_rejects_other_names():
    with pytest.raises(ValueError, match="ring"):
        toys.modes(config(name="digits"))


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_sampler_matches_mixture(name):
    """Mode frequencies are uniform and within-mode deviations have variance std^2.

    Modes are >= 0.76 apart (ring: 2 * 2 * sin(pi/8)), over 15 std, so the nearest centre is
    the component that drew the sample. Frequencies: each count is Binomial(N, 1/K), tolerance
    4.5 standard deviations (25 counts). Variance: the mean of the 2N squared coordinates of the
    residuals estimates std^2 with relative standard error sqrt(2 / (2N)); tolerance 4.5 of them.
    """
    num_samples = 20_000
    centres, std = toys.modes(config(name=name))
    samples = np.asarray(toys.sampler(config(name=name))(jax.random.key(0), num_samples))
    assert samples.shape == (num_samples, 2) and samples.dtype == np.float32
    distances = np.linalg.norm(samples[:, None] - centres[None], axis=-1)
    nearest = np.argmin(distances, axis=1)
    counts = np.bincount(nearest, minlength=len(centres))
    p = 1.0 / len(centres)
    np.testing.assert_array_less(np.abs(counts - num_samples * p),
                                 4.5 * math.sqrt(num_samples * p * (1 - p)))
    residuals = samples - centres[nearest]
    variance = np.mean(residuals**2)
    assert abs(variance / std**2 - 1.0) < 4.5 * math.sqrt(1.0 / num_samples)
    np.testing.assert_allclose(residuals.mean(axis=0), 0.0, atol=4.5 * std / math.sqrt(num_samples))


def test_mode_statistics_on_exact_samples():
    """Exact samples: share within 3 std is 1 - exp(-4.5) (binomial tolerance, 4 std); all 25
    modes covered."""
    num_samples = 20_000
    centres, std = toys.modes(config(name="grid"))
    samples = toys.sampler(config(name="grid"))(jax.random.key(1), num_samples)
    stats = toys.mode_statistics(samples, centres, std)
    p = SHARE_WITHIN_3STD_2D
    assert abs(stats["share_within_3std"] - p) < 4 * math.sqrt(p * (1 - p) / num_samples)
    assert stats["modes_covered"] == 25


def test_mode_statistics_counts_only_near_samples():
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    std = 0.5
    samples = np.array([
        [2.9 * std, 0.0],  # within 3 std of mode 0
        [0.0, 3.1 * std],  # outside every mode's 3 std
        [10.0, 1.0],  # within 3 std of mode 1
        [10.0, -1.0],  # within 3 std of mode 1
        [5.0, 5.0],  # far from all
    ])
    stats = toys.mode_statistics(samples, centres, std)
    assert stats == dict(share_within_3std=3 / 5, modes_covered=2)
    # With two high-quality samples needed per mode, only mode 1 counts.
    assert toys.mode_statistics(samples, centres, std, min_count=2)["modes_covered"] == 1
    # Collapsed samples cover one mode; non-finite samples are never high quality.
    collapsed = np.array([[10.0, 0.0], [10.1, 0.0], [np.nan, 0.0], [np.inf, 1.0]])
    assert toys.mode_statistics(collapsed, centres, std) == dict(share_within_3std=0.5,
                                                                 modes_covered=1)


def test_mode_kl_on_known_histograms():
    """KL(h || uniform) = sum_k h_k log(K h_k): 0 for equal counts, log K for one mode, and
    log K (by definition) when no sample is within 3 std of a mode."""
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])  # K = 4
    std = 0.5
    even = np.repeat(centres, 3, axis=0) + 0.1  # 3 high-quality samples per mode
    assert toys.mode_kl(even, centres, std) == pytest.approx(0.0, abs=1e-12)
    one_mode = np.array([[10.0, 0.1], [10.2, 0.0], [9.9, -0.1]])
    assert toys.mode_kl(one_mode, centres, std) == pytest.approx(math.log(4))
    # Low-quality samples do not enter h: two far-off samples leave the one-mode histogram as is.
    with_far = np.concatenate([one_mode, [[5.0, 5.0], [np.nan, 0.0]]])
    assert toys.mode_kl(with_far, centres, std) == pytest.approx(math.log(4))
    assert toys.mode_kl(np.array([[5.0, 5.0], [20.0, -7.0]]), centres, std) == \
        pytest.approx(math.log(4))
    # Counts (3, 1, 0, 0): h = (3/4, 1/4, 0, 0).
    uneven = np.array([[0.0, 0.1], [0.1, 0.0], [0.0, -0.1], [10.0, 0.0]])
    expected = 0.75 * math.log(4 * 0.75) + 0.25 * math.log(4 * 0.25)
    assert toys.mode_kl(uneven, centres, std) == pytest.approx(expected)


def test_exact_metrics_on_exact_samples():
    """The grid's exact metrics of exact samples. With n high-quality samples of K equal modes,
    2 n KL(h || U) is asymptotically chi^2 with K - 1 degrees of freedom (the G-test), so
    mode_kl has mean (K - 1) / (2 n) and standard deviation sqrt(2 (K - 1)) / (2 n): for K = 25
    and n ~ 0.989 * 5000 that is 0.0024 +- 0.0007; the bound 0.0024 + 6 * 0.0007 < 0.007 fails for
    a histogram as uneven as one mode holding twice its share (KL ~ 0.016 from that alone)."""
    num_samples = 5000
    grid = config(name="grid")
    samples = toys.sampler(grid)(jax.random.key(2), num_samples)
    metrics = toys.exact_metrics(grid, samples)
    assert set(metrics) == set(toys.METRIC_GOALS) == {"share_within_3std", "modes_covered",
                                                      "mode_kl", "bin_kl"}
    assert all(isinstance(v, float) for v in metrics.values())
    stats = toys.mode_statistics(samples, *toys.modes(grid))
    assert metrics["share_within_3std"] == stats["share_within_3std"]
    assert metrics["modes_covered"] == 25.0
    assert 0.0 <= metrics["mode_kl"] < 0.007
    # bin_kl: the G-test again, now with K + 1 = 26 bins: mean K / (2 n) = 0.0025, sd 0.0007.
    assert 0.0 <= metrics["bin_kl"] < 0.007
    # Every sample pushed onto mode 0: the worst balance.
    collapsed = toys.exact_metrics(grid, np.zeros((10, 2)) + toys.grid_centres()[0])
    assert collapsed["mode_kl"] == pytest.approx(math.log(25)) and collapsed["modes_covered"] == 1


def test_bin_kl_on_known_histograms():
    """KL(h || p) over the K mode balls and 'elsewhere', p_k = (1 - e^-4.5) / K, p_off = e^-4.5
    in 2-D: the closed form on histograms built by hand."""
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])  # K = 2
    std = 0.5
    inside, off = 1.0 - math.exp(-4.5), math.exp(-4.5)
    # Half the samples in mode 0, half far from both: h = (1/2, 0, 1/2).
    samples = np.array([[0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [np.nan, 0.0]])
    expected = 0.5 * math.log(0.5 / (inside / 2)) + 0.5 * math.log(0.5 / off)
    assert toys.bin_kl(samples, centres, std) == pytest.approx(expected)
    # Nothing near a mode: log(1 / p_off) = 4.5 nats.
    assert toys.bin_kl(np.array([[5.0, 5.0]]), centres, std) == pytest.approx(4.5)
    # Equal modes and no sample elsewhere: log(1 / P(chi^2_2 <= 9)), i.e. about 0.0111.
    even = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert toys.bin_kl(even, centres, std) == pytest.approx(-math.log(inside))


@pytest.mark.parametrize("samples,centres,std,min_count", [
    (np.zeros((3, 3)), np.zeros((2, 2)), 1.0, 1),
    (np.zeros((0, 2)), np.zeros((2, 2)), 1.0, 1),
    (np.zeros((3, 2)), np.zeros((2, 2)), 0.0, 1),
    (np.zeros((3, 2)), np.zeros((2, 2)), 1.0, 0),
])
def test_mode_statistics_rejects_bad_input(samples, centres, std, min_count):
    with pytest.raises(ValueError):
        toys.mode_statistics(samples, centres, std, min_count)
