"""Tests of kale_jax.metrics.statistics: streamed feature statistics and the per-split cache."""
import os

import numpy as np
import pytest

from kale_jax.errors import DataError
from kale_jax.metrics import statistics


def test_running_statistics_match_numpy_over_uneven_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 5)) * 3 + 10  # offset: the sums must not lose the covariance
    running = statistics.RunningStatistics(keep=30)
    for start, stop in ((0, 7), (7, 60), (60, 103)):
        running.update(x[start:stop])
    result = running.result()
    np.testing.assert_allclose(result.mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result.sigma, np.cov(x, rowvar=False), rtol=1e-9)
    assert result.n == 103
    np.testing.assert_allclose(result.features, x[:30], rtol=1e-6)


def test_data_statistics_are_cached_per_split(tmp_path):
    calls = []

    def pixels(images):  # a feature function: flattened pixels
        calls.append(images.shape[0])
        return images.reshape(images.shape[0], -1)

    config = {"name": "digits", "image_size": 8}
    kwargs = dict(cache_dir=str(tmp_path), keep=20, chunk_size=50)
    train = statistics.data_statistics(config, "train", 120, pixels, "pixels", **kwargs)
    test = statistics.data_statistics(config, "test", 120, pixels, "pixels", **kwargs)
    assert sum(calls) == 240 and train.n == test.n == 120
    assert not np.allclose(train.mu, test.mu)  # each split its own statistics
    again = statistics.data_statistics(config, "train", 120, pixels, "pixels", **kwargs)
    assert sum(calls) == 240  # read from the cache
    np.testing.assert_array_equal(again.sigma, train.sigma)
    assert again.features.shape == (20, 64)
    path = statistics.cache_path(str(tmp_path), config, "train", 120, "pixels")
    assert os.path.exists(path)
    other = statistics.cache_path(str(tmp_path), {**config, "image_size": 16}, "train", 120,
                                  "pixels")
    assert other != path  # another data config is another cache entry
    with open(path, "wb") as f:
        f.write(b"not an npz")
    with pytest.raises(DataError, match="delete the file"):
        statistics.data_statistics(config, "train", 120, pixels, "pixels", **kwargs)
