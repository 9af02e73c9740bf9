"""Feature statistics for FID / KID: streamed over generated chunks, cached on disk for data splits.

* `RunningStatistics` accumulates the mean and covariance of features arriving in chunks (float64
  sums, so 50,000 samples never sit in memory at once) and keeps the first `keep` rows for KID.
* `data_statistics` computes the statistics of a dataset split once and caches them in
  `cache_dir` as an .npz named by dataset, split, data config, example count and feature
  extractor, so train and test statistics each come from their own split and are reused by every
  later run. Cached files are read with allow_pickle=False.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

from kale_jax import data
from kale_jax.errors import DataError

FeatureFn = Callable[[np.ndarray], np.ndarray]
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "kale_jax", "statistics")


class FeatureStatistics(NamedTuple):
    """mu (d,) and sigma (d, d) float64 over n feature rows; features: the first rows kept (KID)."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray


class RunningStatistics:
    """Mean and unbiased covariance of feature rows added in chunks.

    Args:
      keep: how many of the first rows to keep for KID (0 keeps none).
    """

    def __init__(self, keep: int = 0):
        self.keep = keep
        self.n = 0
        self._sum = None
        self._outer = None
        self._kept = []
        self._num_kept = 0

    def update(self, features: np.ndarray) -> None:
        """Adds rows (m, d)."""
        features = np.asarray(features)
        x = features.astype(np.float64)
        if self._sum is None:
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x
        self.n += x.shape[0]
        if self._num_kept < self.keep:
            rows = features[: self.keep - self._num_kept].astype(np.float32)
            self._kept.append(rows)
            self._num_kept += rows.shape[0]

    def result(self) -> FeatureStatistics:
        """The statistics so far (needs n >= 2)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature rows, got {self.n}")
        mu = self._sum / self.n
        # Sum of outer products minus n mu mu^T, over n - 1 (np.cov's normalisation).
        sigma = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        sigma = (sigma + sigma.T) / 2
        kept = np.concatenate(self._kept) if self._kept else np.zeros((0, mu.shape[0]), np.float32)
        return FeatureStatistics(mu, sigma, self.n, kept)


def cache_path(cache_dir: str, data_config: Mapping[str, Any], split: str, num_examples: int,
               feature_name: str) -> str:
    """Where the statistics of (data config, split, num_examples, features) are cached."""
    config = {k: v for k, v in dict(data_config).items() if k not in ("data_dir", "manual_dir")}
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    name = str(data_config.get("name", "data")).replace("/", "_")
    return os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR),
                        f"{name}_{split}_{num_examples}_{digest[:10]}_{feature_name}.npz")


def data_statistics(data_config: Mapping[str, Any], split: str, num_examples: int,
                    feature_fn: FeatureFn, feature_name: str, *, cache_dir: str = "",
                    keep: int = 0, chunk_size: int = 1000, seed: int = 0) -> FeatureStatistics:
    """Feature statistics of `num_examples` examples of a data split, cached on disk.

    Args:
      data_config: config.data (kale_jax.data names the dataset).
      split: 'train' or 'test' (the dataset's own held-out split for 'test').
      num_examples: examples used (the caller caps it at the split's size).
      feature_fn: images (n, ...) -> features (n, d), e.g. an inception.FeatureExtractor.
      feature_name: identifies feature_fn and its weights in the cache file name.
      cache_dir: directory of cached statistics ('' for ~/.cache/kale_jax/statistics).
      keep: feature rows kept for KID (the cache holds them too).
      chunk_size: examples featurised at a time.
      seed: which examples (kale_jax.data.eval_examples).
    """
    path = cache_path(cache_dir, data_config, split, num_examples, feature_name)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as cached:
                stats = FeatureStatistics(cached["mu"], cached["sigma"], int(cached["n"]),
                                          cached["features"])
        except (ValueError, OSError, KeyError) as error:
            raise DataError(f"cached statistics {path} are unreadable ({type(error).__name__}); "
                            "delete the file to recompute them") from None
        if stats.features.shape[0] >= min(keep, stats.n):
            return stats._replace(features=stats.features[:keep])
    examples = data.eval_examples(data_config, split=split, num_examples=num_examples, seed=seed)
    running = RunningStatistics(keep=keep)
    for start in range(0, examples.shape[0], chunk_size):
        running.update(feature_fn(examples[start:start + chunk_size]))
    stats = running.result()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, n=np.asarray(stats.n), features=stats.features)
    os.replace(tmp, path)
    return stats
