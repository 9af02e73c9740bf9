"""Convergence diagnostics of MCMC draws."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def effective_sample_size(samples: Array) -> Array:
    """Multi-chain effective sample size per dimension, Geyer's initial monotone sequence.

    Autocorrelations are combined over chains as in Stan (Gelman et al., BDA3 section 11.5):
    rho_t = 1 - (W - mean_c acov_c(t)) / var_plus, var_plus = (n - 1)/n W + B/n. Pair sums
    P_k = rho_2k + rho_2k+1 are kept while positive and made non-increasing (Geyer 1992),
    tau = -1 + 2 sum_k P_k, ESS = n m / tau, with tau floored at 1 / log10(n m) as in Stan.

    Args:
      samples: (steps, chains, ...) draws, steps first (e.g. `SampleResult.trace`); steps >= 4.

    Returns:
      (...) ESS of the mean of each coordinate over all steps * chains draws.
    """
    x = jnp.asarray(samples)
    if x.ndim < 2 or x.shape[0] < 4:
        raise ValueError(
            f'samples: expected shape (steps >= 4, chains, ...), got {x.shape}.')
    n, m = x.shape[:2]
    event_shape = x.shape[2:]
    x = jnp.reshape(x, (n, m, -1)).astype(jnp.promote_types(x.dtype, jnp.float32))
    chain_mean = jnp.mean(x, axis=0)
    centred = x - chain_mean
    fft_len = 1 << (2 * n - 1).bit_length()
    spectrum = jnp.fft.rfft(centred, n=fft_len, axis=0)
    acov = jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=fft_len, axis=0)[:n] / n  # (n, m, D)
    within = jnp.mean(acov[0], axis=0) * n / (n - 1)
    between_over_n = jnp.var(chain_mean, axis=0, ddof=1) if m > 1 else jnp.zeros_like(within)
    var_plus = within * (n - 1) / n + between_over_n
    rho = 1.0 - (within - jnp.mean(acov, axis=1)) / var_plus  # (n, D)
    num_pairs = n // 2
    pairs = rho[:2 * num_pairs:2] + rho[1:2 * num_pairs:2]     # (num_pairs, D)
    positive = jnp.cumprod(pairs > 0, axis=0).astype(bool)
    monotone = lax.cummin(pairs, axis=0)
    tau = -1.0 + 2.0 * jnp.sum(jnp.where(positive, monotone, 0.0), axis=0)
    tau = jnp.maximum(tau, 1.0 / math.log10(n * m))
    return jnp.reshape(n * m / tau, event_shape)
