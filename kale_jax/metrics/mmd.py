"""Unbiased squared maximum mean discrepancy (MMD^2) with a mixture of Gaussian kernels.

For samples x_1..x_m ~ P and y_1..y_n ~ Q (any shape (N, ...), flattened to vectors) and kernel
k, the unbiased estimate (Gretton et al., JMLR 2012, eq. 3) is

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
              - 2/(mn) sum_{i, j} k(x_i, y_j),

whose expectation is MMD^2(P, Q) = E k(X, X') + E k(Y, Y') - 2 E k(X, Y) exactly; it can be
negative. The kernel is an equal-weight mixture of Gaussians over bandwidths sigma_s,

    k(a, b) = (1/S) sum_s exp(-|a - b|^2 / (2 sigma_s^2)),   so k(a, a) = 1.

Default bandwidths: the median heuristic times (0.5, 1, 2), where the median is that of the
pairwise Euclidean distances in the pooled sample (its first `max_points` rows of each input).
A data-chosen bandwidth makes the estimate very slightly biased; pass `bandwidths` explicitly
to compare numbers across runs or models on one fixed kernel.

Memory: kernel sums are computed over blocks of `block_size` rows, O(block_size * N) at a time,
so a few thousand samples (or tens of thousands) fit in memory.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from kale_jax import checks

Array = jax.Array
Bandwidths = Union[float, Sequence[float], Array]

DEFAULT_BANDWIDTH_SCALES = (0.5, 1.0, 2.0)
DEFAULT_BLOCK_SIZE = 512
DEFAULT_MEDIAN_POINTS = 1000


def _check_pair(x: Array, y: Array) -> None:
    if x.ndim < 1 or y.ndim < 1 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must be (N, ...) arrays with equal trailing shapes, got "
                         f"shapes {x.shape} and {y.shape}.")


def _flatten_pair(x: Array, y: Array) -> tuple[Array, Array]:
    """(m, ...), (n, ...) -> (m, D), (n, D) in a float dtype (at least float32)."""
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, y.dtype), jnp.float32)
    return (x.reshape(x.shape[0], -1).astype(dtype), y.reshape(y.shape[0], -1).astype(dtype))


def _squared_distances(a: Array, b: Array) -> Array:
    """|a_i - b_j|^2: (p, D), (q, D) -> (p, q), clamped at 0 against round-off."""
    cross = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
    squared = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * cross
    return jnp.maximum(squared, 0.0)


def _median_distance(x: Array, y: Array, max_points: int) -> Array:
    """Median pairwise distance of the pooled first max_points rows of flat x and y."""
    pooled = jnp.concatenate([x[:max_points], y[:max_points]], axis=0)
    pooled = pooled - jnp.mean(pooled, axis=0)
    squared = _squared_distances(pooled, pooled)
    upper = jnp.triu_indices(pooled.shape[0], k=1)
    return jnp.sqrt(jnp.median(squared[upper]))


@functools.partial(jax.jit, static_argnames=("max_points",))
def _median_bandwidth(x: Array, y: Array, max_points: int) -> Array:
    return _median_distance(*_flatten_pair(x, y), max_points)


def median_bandwidth(x: Array, y: Array, *, max_points: int = DEFAULT_MEDIAN_POINTS) -> Array:
    """Median pairwise Euclidean distance of the pooled first `max_points` rows of x and y.

    Args:
        x: (m, ...); y: (n, ...) with the same trailing shape (flattened).
        max_points: rows taken from each input (bounds the O(k^2) distance matrix), >= 1.
    Returns:
        scalar distance, in the data's units.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_pair(x, y)
    checks.check_int(max_points, "max_points", minimum=1)
    if min(x.shape[0], max_points) + min(y.shape[0], max_points) < 2:
        raise ValueError("median_bandwidth needs at least two points in total.")
    return _median_bandwidth(x, y, max_points)


def reference_bandwidths(reference: Array,
                         scales: Sequence[float] = DEFAULT_BANDWIDTH_SCALES) -> np.ndarray:
    """One fixed kernel's bandwidths from reference samples alone, for comparable MMDs.

    The median heuristic on the reference's two halves (median_bandwidth(first, second)) times
    `scales`: MMDs of different models against the same reference then share one kernel.

    Args:
        reference: (n, ...) reference samples, n >= 2.
        scales: multipliers of the median distance.
    Returns:
        (len(scales),) float32 bandwidths, in the data's units.
    """
    half = max(reference.shape[0] // 2, 1)
    median = np.asarray(median_bandwidth(reference[:half], reference[half:]))
    return median * np.asarray(scales, np.float32)


def _kernel_sum(x: Array, y: Array, bandwidths: Array, exclude_diagonal: bool,
                block_size: int) -> Array:
    """sum_{i, j} k(x_i, y_j), over i != j when exclude_diagonal (then x is y); flat inputs."""
    num_rows, dim = x.shape
    block_size = min(block_size, num_rows)
    num_blocks = -(-num_rows // block_size)
    padded = jnp.pad(x, ((0, num_blocks * block_size - num_rows), (0, 0)))
    blocks = padded.reshape(num_blocks, block_size, dim)
    row_ids = jnp.arange(num_blocks * block_size).reshape(num_blocks, block_size)
    column_ids = jnp.arange(y.shape[0])
    neg_inv_two_var = -0.5 / jnp.square(bandwidths)  # (S,)

    def block_sum(args):
        block, rows = args
        squared = _squared_distances(block, y)  # (block_size, n)
        kernel = jnp.zeros_like(squared)
        for s in range(bandwidths.shape[0]):  # S is small: keep memory at one (block, n) array
            kernel = kernel + jnp.exp(squared * neg_inv_two_var[s])
        keep = (rows < num_rows)[:, None]
        if exclude_diagonal:
            keep = keep & (rows[:, None] != column_ids[None, :])
        return jnp.sum(jnp.where(keep, kernel, 0.0))

    if num_blocks == 1:  # no loop: cheaper to compile
        return block_sum((blocks[0], row_ids[0])) / bandwidths.shape[0]
    return jnp.sum(jax.lax.map(block_sum, (blocks, row_ids))) / bandwidths.shape[0]


def _as_bandwidths(bandwidths: Bandwidths) -> Array:
    values = jnp.atleast_1d(jnp.asarray(bandwidths))
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"bandwidths must be a positive scalar or a non-empty 1-D sequence, "
                         f"got {bandwidths!r}.")
    try:
        concrete = np.asarray(values)
    except jax.errors.TracerArrayConversionError:  # inside a user's jit: cannot check values
        return values
    if not np.all(np.isfinite(concrete) & (concrete > 0)):
        raise ValueError(f"bandwidths must be finite and > 0, got {concrete.tolist()}.")
    return values


@functools.partial(jax.jit, static_argnames=("block_size",))
def _mmd2(x: Array, y: Array, bandwidths: Optional[Array], block_size: int) -> Array:
    x, y = _flatten_pair(x, y)
    # Distances are translation invariant; centring limits cancellation in |a|^2 + |b|^2 - 2ab.
    centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
    x, y = x - centre, y - centre
    if bandwidths is None:
        scales = jnp.asarray(DEFAULT_BANDWIDTH_SCALES, x.dtype)
        bandwidths = _median_distance(x, y, DEFAULT_MEDIAN_POINTS) * scales
    bandwidths = bandwidths.astype(x.dtype)
    m, n = x.shape[0], y.shape[0]
    within_x = _kernel_sum(x, x, bandwidths, True, block_size) / (m * (m - 1))
    within_y = _kernel_sum(y, y, bandwidths, True, block_size) / (n * (n - 1))
    # Block over the larger input's rows: the result is the same, memory is O(block * min).
    if m >= n:
        across = _kernel_sum(x, y, bandwidths, False, block_size) / (m * n)
    else:
        across = _kernel_sum(y, x, bandwidths, False, block_size) / (m * n)
    return within_x + within_y - 2.0 * across


def mmd2(x: Array, y: Array, *, bandwidths: Optional[Bandwidths] = None,
         block_size: int = DEFAULT_BLOCK_SIZE) -> Array:
    """Unbiased MMD^2 between samples x and y with a Gaussian-mixture kernel (module docstring).

    Args:
        x: (m, ...) samples of P, m >= 2.
        y: (n, ...) samples of Q, n >= 2, same trailing shape as x. Both are flattened.
        bandwidths: kernel bandwidths sigma_s (data units), scalar or (S,); default
            median_bandwidth(x, y) * (0.5, 1, 2).
        block_size: rows per block of the kernel sums (memory O(block_size * min(m, n))).
    Returns:
        scalar MMD^2_u (may be slightly negative when P = Q). Symmetric in (x, y).
        Compiled once per input shapes; callable inside jit and vmap.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_pair(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 rows each, got {x.shape[0]} and "
                         f"{y.shape[0]}.")
    checks.check_int(block_size, "block_size", minimum=1)
    if bandwidths is not None:
        bandwidths = _as_bandwidths(bandwidths)
    return _mmd2(x, y, bandwidths, block_size=block_size)


def mmd2_noise(reference: Array, *, bandwidths: Bandwidths, num_samples: Optional[int] = None,
               num_splits: int = 16, seed: int = 0) -> float:
    """Noise level of mmd2: its standard deviation between two true samples (P = Q).

    MMD^2_u of two independent n-row samples of one distribution has mean 0; its spread is the
    smallest difference an MMD^2 of that size can show. Estimated from `reference` alone: the
    root mean square of mmd2 over `num_splits` random splits into halves of h = n // 2 rows,
    rescaled to `num_samples` rows per side by sqrt(h (h - 1) / (m (m - 1))) (under P = Q the
    estimate is a degenerate U-statistic, variance ∝ 1 / (m (m - 1)); docs/math.md).

    Args:
        reference: (n, ...) samples of the reference distribution, n >= 4.
        bandwidths: the kernel's bandwidths (as in mmd2), scalar or (S,).
        num_samples: m, rows per side of the MMDs this noise is for; default n.
        num_splits: random splits averaged (relative error about 1 / sqrt(num_splits)).
        seed: seed of the splits.
    Returns:
        the noise level, in MMD^2 units (float, >= 0).
    """
    reference = np.asarray(reference)
    n = reference.shape[0]
    if n < 4:
        raise ValueError(f"reference needs at least 4 rows for a noise level, got {n}.")
    checks.check_int(num_splits, "num_splits", minimum=1)
    m = n if num_samples is None else int(num_samples)
    if m < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}.")
    h = n // 2
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_splits):
        order = rng.permutation(n)
        values.append(float(mmd2(reference[order[:h]], reference[order[h:2 * h]],
                                 bandwidths=bandwidths)))
    rms = math.sqrt(float(np.mean(np.square(values))))
    return rms * math.sqrt(h * (h - 1) / (m * (m - 1)))
