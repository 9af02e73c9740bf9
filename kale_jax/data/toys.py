"""2-D toy mixtures (ring of 8 Gaussians, 5 x 5 grid of Gaussians) and mode-coverage statistics.

Examples are vectors of shape (2,), in the data's own units (not rescaled to [-1, 1]).
Each toy is an equal-weight mixture of isotropic Gaussians N(centre_k, std^2 I_2):

* ``ring``: 8 centres equally spaced on the circle of radius ``data.radius`` (default 2.0),
  the first at angle 0; ``data.std`` default 0.02.
* ``grid``: 25 centres at {-2, -1, 0, 1, 2}^2; ``data.std`` default 0.05.

These are the settings of the mode-collapse benchmarks of Metz et al. (unrolled GANs, 2017)
and Srivastava et al. (VEEGAN, 2017); `mode_statistics` computes their two statistics, `mode_kl`
how unevenly the covered modes are filled, and `exact_metrics` all three (the datasets' exact
metric hook, kale_jax.data.exact_metrics; better is `METRIC_GOALS`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kale_jax.data import options

TOYS = ("ring", "grid")
RING_NUM_MODES = 8
RING_RADIUS = 2.0
RING_STD = 0.02
GRID_COORDINATES = (-2.0, -1.0, 0.0, 1.0, 2.0)
GRID_STD = 0.05
CHUNK_SIZE = 1024
# Which direction is better for each exact metric (kale_jax.data.metric_goal).
METRIC_GOALS = {"share_within_3std": "max", "modes_covered": "max", "mode_kl": "min",
                "bin_kl": "min"}


def ring_centres(radius: float = RING_RADIUS) -> np.ndarray:
    """The 8 ring centres: float32 (8, 2), radius * (cos(2 pi k / 8), sin(2 pi k / 8))."""
    angles = 2.0 * np.pi * np.arange(RING_NUM_MODES) / RING_NUM_MODES
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def grid_centres() -> np.ndarray:
    """The 25 grid centres: float32 (25, 2), row-major over {-2, ..., 2}^2."""
    first, second = np.meshgrid(GRID_COORDINATES, GRID_COORDINATES, indexing="ij")
    return np.stack([first.ravel(), second.ravel()], axis=1).astype(np.float32)


def modes(data_config: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    """(centres (K, 2) float32, std) of the toy named by ``data_config.name``."""
    name = data_config.get("name", None)
    if name == "ring":
        radius = options.positive_float(data_config, "radius", RING_RADIUS)
        return ring_centres(radius), options.positive_float(data_config, "std", RING_STD)
    if name == "grid":
        return grid_centres(), options.positive_float(data_config, "std", GRID_STD)
    raise ValueError(f"data.name must be one of {TOYS} for toy modes, got {name!r}.")


@jax.jit
def _mixture_chunk(key: jax.Array, centres: jax.Array, std: jax.Array) -> jax.Array:
    component_key, noise_key = jax.random.split(key)
    components = jax.random.randint(component_key, (CHUNK_SIZE,), 0, centres.shape[0])
    noise = jax.random.normal(noise_key, (CHUNK_SIZE, centres.shape[1]), jnp.float32)
    return centres[components] + std * noise


def sample_mixture(key: jax.Array, num_samples: int, centres: np.ndarray,
                   std: float) -> np.ndarray:
    """`num_samples` i.i.d. draws from the equal-weight mixture of N(centre_k, std^2 I).

    Drawn in chunks of CHUNK_SIZE (chunk i from fold_in(key, i)) so that every N shares one
    compilation; deterministic in `key`.

    Args:
        key: PRNG key.
        num_samples: N >= 0.
        centres: (K, D) mixture means.
        std: standard deviation of every component, per coordinate.
    Returns:
        float32 (N, D).
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    centres = jnp.asarray(centres, jnp.float32)
    std = jnp.float32(std)
    num_chunks = -(-num_samples // CHUNK_SIZE)
    chunks = [np.asarray(_mixture_chunk(jax.random.fold_in(key, i), centres, std))
              for i in range(num_chunks)]
    if not chunks:
        return np.zeros((0, centres.shape[1]), np.float32)
    return np.concatenate(chunks)[:num_samples]


def sampler(data_config: Mapping[str, Any]):
    """draw(key, n) -> float32 (n, 2) for the toy named by ``data_config.name``."""
    centres, std = modes(data_config)
    return lambda key, num_samples: sample_mixture(key, num_samples, centres, std)


def _assign(samples: np.ndarray, centres: np.ndarray, std: float) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centre (N,) int, high quality (N,) bool) after checking the arguments."""
    samples = np.asarray(samples, np.float64)
    centres = np.asarray(centres, np.float64)
    if samples.ndim != 2 or centres.ndim != 2 or samples.shape[1] != centres.shape[1]:
        raise ValueError(f"samples (N, D) and centres (K, D) must share D, got shapes "
                         f"{samples.shape} and {centres.shape}.")
    if samples.shape[0] == 0:
        raise ValueError("samples must hold at least one row, got 0.")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}.")
    squared = np.sum((samples[:, None, :] - centres[None, :, :]) ** 2, axis=-1)  # (N, K)
    nearest = np.argmin(squared, axis=1)
    # Non-finite samples have no nearest centre and are never high quality.
    high_quality = np.take_along_axis(squared, nearest[:, None], axis=1)[:, 0] <= (3 * std) ** 2
    return nearest, high_quality


def mode_statistics(samples: np.ndarray, centres: np.ndarray, std: float,
                    min_count: int = 1) -> dict[str, float | int]:
    """Mode-coverage statistics of samples against a Gaussian mixture's centres (host-side).

    A sample is *high quality* when it lies within 3 std (Euclidean distance) of its nearest
    centre; a mode is *covered* when it is the nearest centre of at least `min_count` high-quality
    samples (VEEGAN's definition with min_count=1; PacGAN used 20 of 2500 samples for the grid).
    For exact samples of a 2-D toy, share_within_3std is P(chi^2_2 <= 9) = 1 - exp(-4.5)
    ~ 0.9889 (the grid's and ring's modes are far apart compared to 3 std).

    Args:
        samples: (N, D).
        centres: (K, D).
        std: component standard deviation (per coordinate), > 0.
        min_count: high-quality samples a mode needs to count as covered, >= 1.
    Returns:
        dict(share_within_3std: float in [0, 1], modes_covered: int in [0, K]).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}.")
    nearest, high_quality = _assign(samples, centres, std)
    counts = np.bincount(nearest[high_quality], minlength=np.shape(centres)[0])
    return dict(share_within_3std=float(np.mean(high_quality)),
                modes_covered=int(np.sum(counts >= min_count)))


def mode_kl(samples: np.ndarray, centres: np.ndarray, std: float) -> float:
    """KL(h || uniform) in nats, h the histogram of the high-quality samples' nearest modes.

    Uses the high-quality samples of `mode_statistics` (within 3 std of their nearest centre):
    h_k is the share of them whose nearest centre is k, and KL(h || U_K) = sum_k h_k log(K h_k)
    = log K - entropy(h), in [0, log K]: 0 when every mode holds as many of them as every other,
    log K when they all sit in one mode. It measures balance only; how many samples are off
    every mode is share_within_3std's job. With no high-quality sample h is undefined and the
    result is log K, the value of a collapse onto one mode: no sample landing on any mode is
    scored no better than the worst balance, so minimising mode_kl never favours samples that
    miss every mode. Exact mixture samples give E[KL] ~ (K - 1) / (2 n) for n high-quality
    samples (the chi-square limit of the plug-in estimate), near 0.

    Args:
        samples: (N, D), N >= 1; non-finite rows are never high quality.
        centres: (K, D).
        std: component standard deviation (per coordinate), > 0.
    Returns:
        float in [0, log K] (nats).
    """
    nearest, high_quality = _assign(samples, centres, std)
    num_modes = np.shape(centres)[0]
    counts = np.bincount(nearest[high_quality], minlength=num_modes).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return float(math.log(num_modes))
    share = counts[counts > 0] / total
    return float(max(np.sum(share * np.log(num_modes * share)), 0.0))


def bin_kl(samples: np.ndarray, centres: np.ndarray, std: float) -> float:
    """KL(h || p) in nats over K + 1 bins: each mode's 3-std ball, and everywhere else.

    h_k is the share of samples within 3 std of centre k (their nearest), h_{K+1} the share of
    the rest; p is the same for the true equal-weight mixture: p_k = P(chi^2_D <= 9) / K and
    p_{K+1} = P(chi^2_D > 9) (for D = 2, exp(-4.5) = 0.0111; the toys' modes are far apart
    compared to 3 std, so the balls do not overlap). One number that sees both what
    share_within_3std sees (mass off the modes) and what mode_kl sees (unequal modes): 0 for
    the truth, at most log(1 / p_{K+1}) (4.5 nats in 2-D) when no sample is near a mode.
    Exact samples give E[KL] ~ K / (2 n) (the chi-square limit of the plug-in estimate).

    Args:
        samples: (N, D), N >= 1; non-finite rows count as off every mode.
        centres: (K, D).
        std: component standard deviation (per coordinate), > 0.
    Returns:
        float >= 0 (nats).
    """
    from scipy import stats  # pylint: disable=g-import-not-at-top
    nearest, high_quality = _assign(samples, centres, std)
    num_modes, dim = np.shape(centres)
    counts = np.bincount(nearest[high_quality], minlength=num_modes).astype(np.float64)
    h = np.append(counts, len(high_quality) - counts.sum()) / len(high_quality)
    inside = float(stats.chi2.cdf(9.0, dim))
    p = np.append(np.full(num_modes, inside / num_modes), 1.0 - inside)
    keep = h > 0
    return float(max(np.sum(h[keep] * np.log(h[keep] / p[keep])), 0.0))


def exact_metrics(data_config: Mapping[str, Any], samples: np.ndarray) -> Dict[str, float]:
    """The toy's exact metrics of `samples`: share_within_3std, modes_covered, mode_kl, bin_kl.

    The dataset hook of kale_jax.data.exact_metrics for 'ring' and 'grid' (no reference data:
    the mixture's centres and std are known). Better is `METRIC_GOALS`.

    Args:
        data_config: the data config (``config.data``) naming the toy.
        samples: (N, 2), N >= 1.
    Returns:
        {'share_within_3std': in [0, 1], 'modes_covered': in [0, K], 'mode_kl': nats in
        [0, log K], 'bin_kl': nats >= 0}, all floats.
    """
    centres, std = modes(data_config)
    stats = mode_statistics(samples, centres, std)
    return dict(share_within_3std=float(stats["share_within_3std"]),
                modes_covered=float(stats["modes_covered"]),
                mode_kl=mode_kl(samples, centres, std),
                bin_kl=bin_kl(samples, centres, std))
