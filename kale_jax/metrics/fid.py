"""Frechet distance between Gaussian feature statistics (FID) and the kernel Inception distance (KID).

FID (Heusel et al. 2017) is the Frechet (2-Wasserstein) distance between the Gaussians fitted to
two sets of features,

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2}),

computed in float64 on the host. The trace of the matrix square root uses scipy.linalg.sqrtm of
S_1 S_2; when that product is near-singular (fewer samples than feature dimensions) and sqrtm
returns non-finite values, eps * I is added to both covariances and the root is recomputed (the
standard fallback of the reference FID code). A product with a significant imaginary part is an
error; a negligible one (round-off) is dropped.

KID (Binkowski et al. 2018) is the unbiased MMD^2 between two feature sets with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, d the feature dimension, averaged over subsets of
`subset_size` rows of each set. Subsets are disjoint blocks of a random permutation when
num_subsets * subset_size fits in both sets, so that the subset estimates are independent and
their standard error std / sqrt(num_subsets) is the standard error of the mean; otherwise subsets
are drawn independently (each without replacement), as in the reference KID code, and the
reported standard error treats them as independent.

Features are arrays (N, d), any float dtype; all functions here work on host numpy arrays.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg

DEFAULT_EPS = 1e-6
DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SUBSET_SIZE = 1000


class GaussianStatistics(NamedTuple):
    """Mean (d,) and covariance (d, d) of a feature set, float64; n: the number of rows."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_statistics(features: np.ndarray) -> GaussianStatistics:
    """Sample mean and unbiased covariance (ddof=1, as np.cov) of features (N >= 2, d)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, d), got shape {features.shape}")
    return GaussianStatistics(features.mean(axis=0), np.cov(features, rowvar=False),
                              features.shape[0])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = DEFAULT_EPS) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (module docstring).

    Args:
      mu1, mu2: (d,) means.
      sigma1, sigma2: (d, d) symmetric positive semi-definite covariances.
      eps: offset added to both diagonals when the plain square root is not finite.
    Returns:
      d^2 >= 0 (a float; FID in the features' squared units).
    Raises:
      ValueError: shapes differ, or the root has a significant imaginary part.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"statistics must be (d,), (d, d) pairs of one d, got means {mu1.shape}, "
                         f"{mu2.shape} and covariances {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the square root of sigma1 @ sigma2 has an imaginary component "
                             f"{imaginary:.3g}; are both covariances positive semi-definite?")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def fid(stats1: GaussianStatistics, stats2: GaussianStatistics,
        eps: float = DEFAULT_EPS) -> float:
    """frechet_distance of two GaussianStatistics."""
    return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma, eps=eps)


class KID(NamedTuple):
    """KID estimate: mean over subsets, its standard error, the std over subsets, subset size."""
    mean: float
    standard_error: float
    std: float
    subset_size: int
    num_subsets: int


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 between x (m >= 2, d) and y (n >= 2, d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(features1: np.ndarray, features2: np.ndarray, *,
        num_subsets: int = DEFAULT_KID_SUBSETS, subset_size: Optional[int] = DEFAULT_KID_SUBSET_SIZE,
        seed: int = 0) -> KID:
    """Kernel Inception distance between two feature sets (module docstring).

    Args:
      features1: (N1, d); features2: (N2, d).
      num_subsets: number of subset pairs averaged (>= 2 for a standard error).
      subset_size: rows per subset, capped at min(N1, N2) (None: min(N1, N2)); >= 2.
      seed: seed of the subset draws.
    Returns:
      KID(mean, standard_error, std, subset_size, num_subsets); mean is unbiased, ~0 (within a
      few standard errors) for two samples of one distribution.
    """
    features1, features2 = np.asarray(features1), np.asarray(features2)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise ValueError(f"features must be (N, d) arrays of one d, got {features1.shape} and "
                         f"{features2.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    n1, n2 = features1.shape[0], features2.shape[0]
    size = min(n1, n2) if subset_size is None else min(subset_size, n1, n2)
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows per set, got {n1} and {n2}")
    rng = np.random.default_rng(seed)
    disjoint = num_subsets * size <= min(n1, n2)
    if disjoint:
        order1, order2 = rng.permutation(n1), rng.permutation(n2)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        if disjoint:
            rows1, rows2 = order1[i * size:(i + 1) * size], order2[i * size:(i + 1) * size]
        else:
            rows1 = rng.choice(n1, size, replace=False)
            rows2 = rng.choice(n2, size, replace=False)
        values[i] = polynomial_mmd2(features1[rows1], features2[rows2])
    std = float(values.std(ddof=1)) if num_subsets > 1 else float("nan")
    return KID(float(values.mean()), std / np.sqrt(num_subsets), std, size, num_subsets)
