"""The relative MMD test of Bounliphone et al. (ICLR 2016): is Y closer to X than Z is?

For a fixed reference sample X (n points) and two candidate samples Y and Z (m points each, all
independent), the statistic is

    D = MMD^2_u(X, Y) - MMD^2_u(X, Z) = mu_YY - 2 mu_XY - mu_ZZ + 2 mu_XZ

(the mu_XX terms cancel), with mu_YY the U-statistic mean of k(y_i, y_j), i != j, and mu_XY the
mean of k(x_a, y_b) over all pairs. Its variance is exact in terms of population moments
(docs/math.md, "The plateau scheduler's test", derives it); `variance` estimates each moment
without bias from kernel sums, so D / sqrt(Var D) is asymptotically N(0, 1) when Y and Z are
equally close to X. The one-sided p-value Phi(D / sqrt(Var D)) is small when Y is significantly
closer to X than Z is.

Everything a later test needs of one candidate sample is a `SetSums` of O(n + m) numbers (row
sums and sums of squares of its kernel matrices with X and with itself), so a scheduler can keep
old samples' summaries instead of the samples (this is what the authors' code does too).
Kernels: `gaussian_mixture_kernel` (the one of kale_jax.metrics.mmd) and `polynomial_kernel`
(KID's cubic kernel, for Inception features).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


class SetSums(NamedTuple):
    """Kernel sums of one candidate sample Y (m points) against the reference X (n points).

    Attributes:
      yy_rows: (m,) sum_{j != i} k(y_i, y_j).
      yy_sq: () sum_{i != j} k(y_i, y_j)^2.
      xy_cols: (m,) sum_a k(x_a, y_b), one entry per y_b.
      xy_rows: (n,) sum_b k(x_a, y_b), one entry per x_a.
      xy_sq: () sum_{a, b} k(x_a, y_b)^2.
    """
    yy_rows: np.ndarray
    yy_sq: np.ndarray
    xy_cols: np.ndarray
    xy_rows: np.ndarray
    xy_sq: np.ndarray


def gaussian_mixture_kernel(bandwidths: Sequence[float]) -> Kernel:
    """k(a, b) = mean_s exp(-|a - b|^2 / (2 sigma_s^2)) on flattened points (as metrics.mmd)."""
    inv = np.asarray([1.0 / (2.0 * float(s) ** 2) for s in np.ravel(bandwidths)], np.float64)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64).reshape(a.shape[0], -1)
        b = np.asarray(b, np.float64).reshape(b.shape[0], -1)
        sq = np.maximum(np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None] - 2.0 * a @ b.T, 0.0)
        return np.mean(np.exp(-sq[None] * inv[:, None, None]), axis=0)

    return kernel


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel k(a, b) = (a . b / dim + 1)^3 (Binkowski et al. 2018) on (N, dim) features."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def set_sums(kernel: Kernel, reference: np.ndarray, sample: np.ndarray) -> SetSums:
    """The SetSums of `sample` (m, ...) against `reference` (n, ...) under `kernel`."""
    k_yy = kernel(sample, sample)
    np.fill_diagonal(k_yy, 0.0)
    k_xy = kernel(reference, sample)
    return SetSums(yy_rows=k_yy.sum(1), yy_sq=np.sum(k_yy ** 2), xy_cols=k_xy.sum(0),
                   xy_rows=k_xy.sum(1), xy_sq=np.sum(k_xy ** 2))


class _Moments(NamedTuple):
    mean_yy: float   # E k(y, y')
    zeta_yy: float   # Var_y E[k(y, y') | y]
    var_yy: float    # Var k(y, y')
    mean_xy: float   # E k(x, y)
    zeta_x: float    # Var_x E[k(x, y) | x]
    zeta_y: float    # Var_y E[k(x, y) | y]
    var_xy: float    # Var k(x, y)
    cov_y: float     # Cov_y(E[k(y, y') | y], E[k(x, y) | y])


def _moments(s: SetSums) -> _Moments:
    """Unbiased estimates of the products of means (each moment below is a mean over distinct
    indices), centred with the estimated means."""
    m, n = s.yy_rows.shape[0], s.xy_rows.shape[0]
    mean_yy = float(np.sum(s.yy_rows)) / (m * (m - 1))
    mean_xy = float(np.sum(s.xy_rows)) / (n * m)
    # E[k(y, y') k(y, y'')] over distinct y, y', y''.
    yy_yy = (float(s.yy_rows @ s.yy_rows) - float(s.yy_sq)) / (m * (m - 1) * (m - 2))
    # E[k(x, y) k(x, y')], y != y'; E[k(x, y) k(x', y)], x != x'.
    xy_xy_same_x = (float(s.xy_rows @ s.xy_rows) - float(s.xy_sq)) / (n * m * (m - 1))
    xy_xy_same_y = (float(s.xy_cols @ s.xy_cols) - float(s.xy_sq)) / (m * n * (n - 1))
    # E[k(y, y') k(x, y)], y != y'.
    yy_xy = float(s.yy_rows @ s.xy_cols) / (m * (m - 1) * n)
    return _Moments(
        mean_yy=mean_yy, zeta_yy=yy_yy - mean_yy ** 2,
        var_yy=float(s.yy_sq) / (m * (m - 1)) - mean_yy ** 2,
        mean_xy=mean_xy, zeta_x=xy_xy_same_x - mean_xy ** 2, zeta_y=xy_xy_same_y - mean_xy ** 2,
        var_xy=float(s.xy_sq) / (n * m) - mean_xy ** 2, cov_y=yy_xy - mean_yy * mean_xy)


def _own_variance(t: _Moments, n: int, m: int) -> float:
    """Var(mu_YY - 2 mu_XY) from the moments of one candidate (docs/math.md)."""
    var_u = 4.0 * (m - 2) / (m * (m - 1)) * t.zeta_yy + 2.0 / (m * (m - 1)) * t.var_yy
    var_v = t.zeta_x / n + t.zeta_y / m + (t.var_xy - t.zeta_x - t.zeta_y) / (n * m)
    return var_u + 4.0 * var_v - 4.0 * (2.0 / m) * t.cov_y


class Result(NamedTuple):
    """difference: D = MMD^2_u(X, Y) - MMD^2_u(X, Z); std: its estimated standard deviation;
    z: D / std; p_value: Phi(z), small when Y is significantly closer to X than Z."""
    difference: float
    std: float
    z: float
    p_value: float


def relative_test(y: SetSums, z: SetSums, min_variance: float = 1e-12) -> Result:
    """The relative MMD test of Y (new) against Z (old) for one reference X.

    Args:
      y, z: SetSums of Y and Z against the same reference X (equal sample sizes not required).
      min_variance: floor of the variance estimate (it can be <= 0 for tiny or equal samples).
    Returns:
      a Result; p_value = Phi(D / std).
    """
    n = y.xy_rows.shape[0]
    if z.xy_rows.shape[0] != n:
        raise ValueError(f"y and z were summed against references of {n} and "
                         f"{z.xy_rows.shape[0]} points; they must share one reference")
    ty, tz = _moments(y), _moments(z)
    m_y, m_z = y.yy_rows.shape[0], z.yy_rows.shape[0]
    difference = (ty.mean_yy - 2.0 * ty.mean_xy) - (tz.mean_yy - 2.0 * tz.mean_xy)
    # Cov(mu_XY, mu_XZ) through the shared x: Cov_x(E[k(x, y) | x], E[k(x, z) | x]) / n.
    cov_x = float(y.xy_rows @ z.xy_rows) / (n * m_y * m_z) - ty.mean_xy * tz.mean_xy
    variance = _own_variance(ty, n, m_y) + _own_variance(tz, n, m_z) - 8.0 * cov_x / n
    std = math.sqrt(max(variance, min_variance))
    z_score = difference / std
    return Result(difference=difference, std=std, z=z_score,
                  p_value=0.5 * math.erfc(-z_score / math.sqrt(2.0)))
