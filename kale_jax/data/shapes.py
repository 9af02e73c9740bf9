"""shapes: 16x16 images of one soft-edged disc whose (cx, cy, r) follow a known 4-cluster mixture.

A data set on a 3-dimensional manifold in pixel space (R^256) with uneven mass on it, the
setting where the paper argues GEBMs shine, and with a known truth: every image can be scored
by fitting the disc back (`fit`) and comparing the fitted parameters with the true law
(`metrics`).

Rendering (`render`). Pixel (i, j) of an image (row i, column j) has its centre at
(x, y) = (j, i), so the frame spans [-0.5, 15.5]^2. A disc with centre (cx, cy) and radius r
(pixels) gives the pixel at distance d from its centre the value
    v = 2 sigmoid((r - d) / EDGE_SCALE) - 1   in (-1, 1):
bright (+1) inside, dark (-1) outside, with a logistic edge of scale 0.3 px (10-90 % rise over
4.39 x 0.3 = 1.3 px), an anti-aliased look. Images are float32 (N, 16, 16, 1), the project's
NHWC convention in [-1, 1] (kale_jax.data.digits, tfds_images).

The parameter law (`sample`): a mixture of K = 4 clusters with weights WEIGHTS =
(0.4, 0.3, 0.2, 0.1); in cluster k, (cx, cy, r) = CENTRES[k] + STDS * t with t three
independent standard normals truncated to [-3, 3] (so supports are bounded boxes and every disc
stays (almost) inside the frame). Cluster centres are >= 12.3 standardised units (coordinates
divided by STDS) apart while a point of a box lies within 3 sqrt(3) = 5.2 units of its own
centre, so the nearest centre in standardised distance (`assign`) recovers every exact
sample's cluster.

Fitting (`fit`): a first guess from moments (coverage w = (v + 1) / 2, centre = w-weighted
centroid, r from the area sum(w) = pi r^2 + pi^3 EDGE_SCALE^2 / 3 of a logistic-edged disc),
then FIT_ITERATIONS Levenberg-Marquardt steps on the squared pixel error, vectorised over images
and kept inside the box FIT_LOWER..FIT_UPPER (centre inside the frame, 1 <= r <= 8). On exact
renderings it converges within 5 steps to < 1e-6 px (float32 images; tests/test_shapes.py).
The residual is the RMS pixel difference between the image and the rendering of its fit, in
[-1, 1] image units.

Metrics (`metrics`, all host-side numpy):
  valid_share  (max) fraction of images whose fit residual is < VALID_THRESHOLD = 0.05 (2.5 % of
               the [-1, 1] range). Calibration (residuals over 2000-4000 images each): exact
               renderings < 1e-7; renderings + Gaussian pixel noise of std s: ~s (so s <= 0.05
               passes); Gaussian blur of std 0.5 px: 0.03-0.053 (mostly passes), 0.7 px:
               >= 0.064, 1 px: >= 0.094 (fail); the mean or the union (pixelwise max) of two
               discs of different clusters: >= 0.18 (fail); a blank image: 0.094; uniform
               noise: ~1.0; an all-bright image: 0.83 (fail).
  cluster_kl   (min, nats) KL(h || WEIGHTS) of the histogram h of nearest-cluster assignments of
               the valid images' fitted parameters. All images of cluster k alone give
               log(1 / w_k). For n exact samples h ~ Multinomial(n, w) / n and
               2 n KL -> chi^2 with K - 1 = 3 degrees of freedom: mean 3 / (2 n).
  param_w1     (min, pixels) mean over (cx, cy, r) of the 1-D Wasserstein-1 distance between the
               valid images' fitted parameters and the exact true marginal (a mixture of
               truncated normals; the integral of |F_n - F| by the midpoint rule on a 0.001 px
               grid, error < 0.001 px). For n exact samples its mean is about
               sqrt(2 / (pi n)) * mean_p int sqrt(F_p (1 - F_p)) (the Brownian-bridge limit):
               `noise_floor(n)`.
With no valid image cluster_kl and param_w1 are NaN (undefined).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from kale_jax.data import options

IMAGE_SIZE = 16
IMAGE_SIZES = (IMAGE_SIZE,)  # data.image_size may only be 16
CHANNELS = 1
SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
EDGE_SCALE = 0.3  # logistic edge scale, pixels
PARAM_NAMES = ("cx", "cy", "r")
WEIGHTS = (0.4, 0.3, 0.2, 0.1)
CENTRES = ((4.5, 4.5, 2.5), (10.5, 10.5, 3.5), (11.0, 4.0, 2.0), (4.5, 11.0, 3.0))  # pixels
STDS = (0.5, 0.5, 0.2)  # per parameter, pixels
TRUNCATION = 3.0  # each standard normal is truncated to [-3, 3]
NUM_CLUSTERS = len(WEIGHTS)
FIT_LOWER = (-0.5, -0.5, 1.0)
FIT_UPPER = (IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5, IMAGE_SIZE / 2)
FIT_ITERATIONS = 12
FIT_CHUNK = 2048  # images per vectorised fit block (bounds memory: ~40 MB in float64)
VALID_THRESHOLD = 0.05  # RMS residual, [-1, 1] units
METRIC_GOALS = {"valid_share": "max", "cluster_kl": "min", "param_w1": "min"}
CHUNK_SIZE = 1024  # parameters drawn per compiled sampling call
_W1_GRID_STEP = 1e-3  # pixels

# Pixel centres, flattened row-major: x = column, y = row.
_ROWS, _COLUMNS = np.meshgrid(np.arange(IMAGE_SIZE, dtype=np.float64),
                              np.arange(IMAGE_SIZE, dtype=np.float64), indexing="ij")
_X, _Y = _COLUMNS.ravel(), _ROWS.ravel()


def check_config(data_config: Mapping[str, Any]) -> None:
    """Validates the set's only key, ``data.image_size`` (16 or absent)."""
    options.choice(data_config, "image_size", IMAGE_SIZE, IMAGE_SIZES)


def _check_params(params: np.ndarray) -> np.ndarray:
    params = np.asarray(params, np.float64)
    if params.ndim != 2 or params.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"params must have shape (N, 3) (cx, cy, r in pixels), got "
                         f"{params.shape}.")
    return params


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != SHAPE:
        raise ValueError(f"images must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, {CHANNELS}) "
                         f"(the 'shapes' set's NHWC images), got {images.shape}.")
    return images


def _model(params: np.ndarray, with_jacobian: bool = False):
    """Flat renderings (N, P) of params (N, 3), float64, and optionally d(values)/d(params)
    (N, P, 3)."""
    dx = _X - params[:, 0:1]
    dy = _Y - params[:, 1:2]
    distance = np.sqrt(dx * dx + dy * dy + 1e-12)  # the epsilon keeps d(distance) finite at 0
    coverage = special.expit((params[:, 2:3] - distance) / EDGE_SCALE)
    values = 2.0 * coverage - 1.0
    if not with_jacobian:
        return values
    slope = 2.0 * coverage * (1.0 - coverage) / EDGE_SCALE  # d values / d (r - distance)
    jacobian = np.stack([slope * dx / distance, slope * dy / distance, slope], axis=-1)
    return values, jacobian


def render(params: np.ndarray) -> np.ndarray:
    """Images of discs.

    Args:
        params: (N, 3) float, (cx, cy, r) in pixels (x = column, y = row, pixel centres at
            integers).
    Returns:
        float32 (N, 16, 16, 1) in [-1, 1].
    """
    params = _check_params(params)
    values = _model(params)
    return values.reshape(-1, *SHAPE).astype(np.float32)


@functools.partial(jax.jit, static_argnums=2)
def _draw_chunk(key: jax.Array, log_weights: jax.Array, size: int) -> jax.Array:
    cluster_key, noise_key = jax.random.split(key)
    clusters = jax.random.categorical(cluster_key, log_weights, shape=(size,))
    noise = jax.random.truncated_normal(noise_key, -TRUNCATION, TRUNCATION,
                                        (size, len(PARAM_NAMES)), jnp.float32)
    centres = jnp.asarray(CENTRES, jnp.float32)
    return centres[clusters] + jnp.asarray(STDS, jnp.float32) * noise


def _log_weights(weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, np.float64)
    if weights.shape != (NUM_CLUSTERS,) or not np.all(weights >= 0) or not weights.sum() > 0:
        raise ValueError(f"weights must be {NUM_CLUSTERS} non-negative numbers with a positive "
                         f"sum, got {weights.tolist()}.")
    with np.errstate(divide="ignore"):
        return np.log(weights / weights.sum()).astype(np.float32)


def sample_params(key: jax.Array, num_samples: int,
                  weights: Sequence[float] = WEIGHTS) -> np.ndarray:
    """Exact i.i.d. draws of (cx, cy, r) from the cluster mixture.

    Drawn in chunks of CHUNK_SIZE (chunk i from fold_in(key, i)), so every N shares one
    compilation and the first m of N draws are the m draws of the same key. Deterministic in
    `key`.

    Args:
        key: PRNG key.
        num_samples: N >= 0.
        weights: cluster weights (K,), normalised here; the default is the data's law, others
            (e.g. one cluster only) give a wrong law with the same clusters, for tests.
    Returns:
        float32 (N, 3) in pixels.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    log_weights = jnp.asarray(_log_weights(weights))
    num_chunks = -(-num_samples // CHUNK_SIZE)
    chunks = [np.asarray(_draw_chunk(jax.random.fold_in(key, i), log_weights, CHUNK_SIZE))
              for i in range(num_chunks)]
    if not chunks:
        return np.zeros((0, len(PARAM_NAMES)), np.float32)
    return np.concatenate(chunks)[:num_samples]


def sample(key: jax.Array, num_samples: int,
           weights: Sequence[float] = WEIGHTS) -> Tuple[np.ndarray, np.ndarray]:
    """Exact i.i.d. images and their parameters (see sample_params; deterministic in `key`).

    Returns:
        (images float32 (N, 16, 16, 1) in [-1, 1], params float32 (N, 3) in pixels).
    """
    params = sample_params(key, num_samples, weights)
    return render(params), params


def sampler(data_config: Mapping[str, Any]):
    """draw(key, n) -> images float32 (n, 16, 16, 1), after validating `data_config`."""
    check_config(data_config)
    return lambda key, num_samples: sample(key, num_samples)[0]


def _initial_guess(values: np.ndarray) -> np.ndarray:
    coverage = np.clip((values + 1.0) / 2.0, 0.0, 1.0)
    area = coverage.sum(axis=1)
    safe = np.maximum(area, 1e-9)
    cx = (coverage * _X).sum(axis=1) / safe
    cy = (coverage * _Y).sum(axis=1) / safe
    # Area of a logistic-edged disc: pi r^2 + pi^3 s^2 / 3 (to O(exp(-r / s))).
    radius = np.sqrt(np.maximum(area - math.pi**3 * EDGE_SCALE**2 / 3, 0.0) / math.pi)
    return np.clip(np.stack([cx, cy, radius], axis=1), FIT_LOWER, FIT_UPPER)


def _fit_block(values: np.ndarray, iterations: int) -> Tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt from the moment guess on flat float64 values (N, P)."""
    lower, upper = np.asarray(FIT_LOWER), np.asarray(FIT_UPPER)
    params = _initial_guess(values)
    model, jacobian = _model(params, with_jacobian=True)
    residual = values - model
    cost = np.sum(residual**2, axis=1)
    damping = np.full(values.shape[0], 1e-3)
    for _ in range(iterations):
        normal = np.einsum("npi,npj->nij", jacobian, jacobian)
        gradient = np.einsum("npi,np->ni", jacobian, residual)
        diagonal = np.einsum("nii->ni", normal) + 1e-9
        step = np.linalg.solve(normal + damping[:, None, None] * (diagonal[:, :, None] * np.eye(3)),
                               gradient[..., None])[..., 0]
        proposal = np.clip(params + step, lower, upper)
        new_model, new_jacobian = _model(proposal, with_jacobian=True)
        new_residual = values - new_model
        new_cost = np.sum(new_residual**2, axis=1)
        better = new_cost < cost
        # Converged: every proposed (clipped) step is negligible, accepted or not; a rejected
        # step of any size keeps the loop going with more damping.
        converged = np.max(np.abs(proposal - params), initial=0.0) < 1e-7  # pixels
        params = np.where(better[:, None], proposal, params)
        residual = np.where(better[:, None], new_residual, residual)
        jacobian = np.where(better[:, None, None], new_jacobian, jacobian)
        cost = np.where(better, new_cost, cost)
        damping = np.where(better, damping / 3.0, damping * 4.0)
        if converged:
            break
    return params, np.sqrt(cost / values.shape[1])


def fit(images: np.ndarray, iterations: int = FIT_ITERATIONS) -> Tuple[np.ndarray, np.ndarray]:
    """The disc parameters of each image and the RMS residual of that fit.

    Args:
        images: (N, 16, 16, 1) in [-1, 1] (any float dtype).
        iterations: Levenberg-Marquardt steps after the moment guess.
    Returns:
        (params_hat float64 (N, 3): (cx, cy, r) in pixels inside FIT_LOWER..FIT_UPPER,
         residual float64 (N,): RMS of image - render(params_hat) in [-1, 1] units; +inf for
         images with a non-finite pixel).
    """
    images = _check_images(images)
    values = images.reshape(images.shape[0], -1).astype(np.float64)
    finite = np.all(np.isfinite(values), axis=1)
    values = np.where(finite[:, None], values, -1.0)
    params = np.zeros((values.shape[0], len(PARAM_NAMES)))
    residual = np.zeros(values.shape[0])
    for start in range(0, values.shape[0], FIT_CHUNK):
        block = slice(start, start + FIT_CHUNK)
        params[block], residual[block] = _fit_block(values[block], iterations)
    return params, np.where(finite, residual, np.inf)


def assign(params: np.ndarray) -> np.ndarray:
    """Nearest cluster of each parameter vector in standardised distance: int64 (N,) in [0, K).

    Args:
        params: (N, 3) (cx, cy, r) in pixels.
    """
    params = _check_params(params)
    scaled = (params[:, None, :] - np.asarray(CENTRES)[None]) / np.asarray(STDS)
    return np.argmin(np.sum(scaled**2, axis=-1), axis=1)


def cluster_kl(params: np.ndarray) -> float:
    """KL(h || WEIGHTS) in nats of the nearest-cluster histogram h of params (N >= 1, 3)."""
    counts = np.bincount(assign(params), minlength=NUM_CLUSTERS)
    share = counts / counts.sum()
    present = share > 0
    return float(np.sum(share[present] * np.log(share[present] / np.asarray(WEIGHTS)[present])))


def marginal_cdf(index: int, x: np.ndarray) -> np.ndarray:
    """The true CDF of parameter `index` (0 cx, 1 cy, 2 r) at x (pixels): float64, x's shape."""
    x = np.asarray(x, np.float64)
    mass = special.ndtr(TRUNCATION) - special.ndtr(-TRUNCATION)
    cdf = np.zeros_like(x)
    for weight, centre in zip(WEIGHTS, CENTRES):
        t = np.clip((x - centre[index]) / STDS[index], -TRUNCATION, TRUNCATION)
        cdf += weight * (special.ndtr(t) - special.ndtr(-TRUNCATION)) / mass
    return cdf


def _support(index: int) -> Tuple[float, float]:
    values = [c[index] for c in CENTRES]
    return (min(values) - TRUNCATION * STDS[index], max(values) + TRUNCATION * STDS[index])


def _grid(index: int, values: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
    """(midpoints, step) of a grid of step <= _W1_GRID_STEP over parameter `index`'s support
    and `values`."""
    lower, upper = _support(index)
    if values is not None and values.size:
        lower, upper = min(lower, float(values.min())), max(upper, float(values.max()))
    count = max(int(math.ceil((upper - lower) / _W1_GRID_STEP)), 1)
    return lower + (np.arange(count) + 0.5) * (upper - lower) / count, (upper - lower) / count


def param_w1(params: np.ndarray) -> float:
    """Mean over (cx, cy, r) of W1(empirical marginal of params, true marginal), pixels.

    W1 = int |F_n - F| dx on a midpoint grid of step <= 0.001 px (error < 0.001 px: F_n's
    jumps total 1 and each is misplaced by less than a step).

    Args:
        params: (N >= 1, 3) finite, in pixels.
    """
    params = _check_params(params)
    distances = []
    for index in range(len(PARAM_NAMES)):
        values = np.sort(params[:, index])
        grid, step = _grid(index, values)
        empirical = np.searchsorted(values, grid, side="right") / values.size
        distances.append(np.sum(np.abs(empirical - marginal_cdf(index, grid))) * step)
    return float(np.mean(distances))


def noise_floor(num_samples: int) -> Dict[str, float]:
    """Expected cluster_kl and param_w1 of `num_samples` exact samples (large-n limits).

    cluster_kl: (K - 1) / (2 n) (2 n KL -> chi^2_{K-1}); param_w1: sqrt(2 / (pi n)) times
    mean_p int sqrt(F_p (1 - F_p)) dx (E|B(t)| = sqrt(2 t (1 - t) / pi) for the Brownian bridge
    B that sqrt(n) (F_n - F) tends to). Metrics of a model's samples at or below these are as
    good as n true samples can show.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    integrals = []
    for index in range(len(PARAM_NAMES)):
        grid, step = _grid(index)
        cdf = marginal_cdf(index, grid)
        integrals.append(np.sum(np.sqrt(cdf * (1.0 - cdf))) * step)
    return {"cluster_kl": (NUM_CLUSTERS - 1) / (2.0 * num_samples),
            "param_w1": math.sqrt(2.0 / (math.pi * num_samples)) * float(np.mean(integrals))}


def metrics(images: np.ndarray,
            threshold: float = VALID_THRESHOLD) -> Dict[str, float]:
    """valid_share, cluster_kl and param_w1 of images (see the module docstring).

    Args:
        images: (N >= 1, 16, 16, 1) in [-1, 1].
        threshold: RMS fit residual below which an image counts as a valid rendering.
    Returns:
        {'valid_share': fraction in [0, 1], 'cluster_kl': nats, 'param_w1': pixels}; the last
        two NaN when no image is valid.
    """
    images = _check_images(images)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got 0.")
    params, residual = fit(images)
    valid = residual < threshold
    if not np.any(valid):
        return {"valid_share": 0.0, "cluster_kl": float("nan"), "param_w1": float("nan")}
    return {"valid_share": float(np.mean(valid)), "cluster_kl": cluster_kl(params[valid]),
            "param_w1": param_w1(params[valid])}


def exact_metrics(data_config: Mapping[str, Any], images: np.ndarray) -> Dict[str, float]:
    """`metrics(images)` after validating the data config (the registry's exact_metrics)."""
    check_config(data_config)
    return metrics(images)
