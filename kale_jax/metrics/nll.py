"""Negative log-likelihoods of flows and of GEBMs with a flow base.

With a base of exact density g (a normalizing flow) the GEBM has density

    q(x) = g(x) exp(-E(x)) / Z,   Z = E_{y ~ g}[exp(-E(y))],

so -log q(x) = -log g(x) + E(x) + log Z. Z is estimated by Monte Carlo over M base samples,
Z_hat = mean_j w_j with w_j = exp(-E(y_j)), an unbiased estimate of Z; log Z_hat (the log-mean-exp
of -E) is reported with the delta-method standard error

    se(log Z_hat) = se(Z_hat) / Z_hat = sd(w) / (sqrt(M) mean(w)),

sd with Bessel's correction. The GEBM NLL is optimistic in expectation: Z_hat is unbiased, so by
Jensen E[log Z_hat] <= log Z and -log q is biased low, by about se(log Z_hat)^2 / 2 for large M.
The Kish effective sample size of the weights, ESS = (sum w)^2 / sum w^2 (`log_z_ess`), is
reported beside it: an ESS far below M means a few base samples carry Z_hat, and then both the
bias and the standard error are unreliable. Everything is accumulated in log space (running
log-sum-exp of -E and of -2E), so energies of any scale and any number of chunks are fine. NLLs
are nats per example (divide by D for nats per dimension).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from kale_jax import kale

Array = jax.Array
CHUNK_SIZE = 1024  # examples or base samples per compiled call


class LogZState(NamedTuple):
    """Running sums for the log-partition estimate: log sum w, log sum w^2, count."""
    log_sum: Array
    log_sum_sq: Array
    count: Array


def log_z_init() -> LogZState:
    """An empty running state."""
    minus_inf = jnp.array(-jnp.inf, jnp.float32)
    return LogZState(minus_inf, minus_inf, jnp.array(0.0, jnp.float32))


def log_z_update(state: LogZState, e_fake: Array, valid: Optional[Array] = None) -> LogZState:
    """Folds base-sample energies (m,) in; `valid` (m,) bool masks out padding."""
    e = jnp.asarray(e_fake, jnp.float32)
    if valid is None:
        valid = jnp.ones(e.shape, bool)
    neg = jnp.where(valid, -e, -jnp.inf)
    return LogZState(jnp.logaddexp(state.log_sum, logsumexp(neg)),
                     jnp.logaddexp(state.log_sum_sq, logsumexp(2.0 * neg)),
                     state.count + jnp.sum(valid))


def log_z_finalize(state: LogZState) -> Tuple[Array, Array]:
    """(log Z_hat, delta-method standard error of log Z_hat), both scalars in nats.

    With S1 = sum w, S2 = sum w^2 over M samples: sd(w)^2 / mean(w)^2 = M (M S2 / S1^2 - 1)
    / (M - 1), so se(log Z_hat) = sqrt((M S2 / S1^2 - 1) / (M - 1)).
    """
    m = state.count
    log_z = state.log_sum - jnp.log(m)
    ratio = jnp.exp(jnp.log(m) + state.log_sum_sq - 2.0 * state.log_sum)  # M S2 / S1^2 >= 1
    stderr = jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / jnp.maximum(m - 1.0, 1.0))
    return log_z, stderr


def log_z_ess(state: LogZState) -> Array:
    """Kish's effective sample size (sum w)^2 / sum w^2 of the weights w = exp(-E), in [1, M]."""
    return jnp.exp(2.0 * state.log_sum - state.log_sum_sq)


def log_partition(e_fake: Array) -> Tuple[Array, Array]:
    """(log mean exp(-e_fake), its delta-method standard error) from energies (m,)."""
    return log_z_finalize(log_z_update(log_z_init(), e_fake))


def gebm_log_prob(base_log_prob: Array, energy: Array, log_z: Array) -> Array:
    """log q(x) = log g(x) - E(x) - log Z, elementwise (nats)."""
    return base_log_prob - energy - log_z


# ------------------------------------------------------------------- flows and GEBMs on data
@functools.lru_cache(maxsize=None)
def _compiled(flow: nn.Module, energy: nn.Module, energy_floor: Optional[float]):
    def energies(energy_vars, x):
        e = energy.apply(energy_vars, x, train=False)
        return e if energy_floor is None else kale.soft_floor(e, energy_floor)

    @jax.jit
    def on_data(flow_vars, energy_vars, x):
        return flow.apply(flow_vars, x, method="log_prob"), energies(energy_vars, x)

    @jax.jit
    def on_base(flow_vars, energy_vars, state, key, num_valid):
        y = flow.apply(flow_vars, jax.random.normal(key, (CHUNK_SIZE, flow.dim), jnp.float32))
        valid = jnp.arange(CHUNK_SIZE) < num_valid
        return log_z_update(state, energies(energy_vars, y), valid)

    return on_data, on_base


def estimate_log_z(flow: nn.Module, energy: nn.Module, flow_variables: Any,
                   energy_variables: Any, key: Array, num_samples: int,
                   energy_floor: Optional[float] = None, *,
                   with_ess: bool = False) -> Tuple[float, ...]:
    """(log Z_hat, se) over `num_samples` base samples, in chunks of CHUNK_SIZE (chunk i drawn
    from fold_in(key, i)); one compilation for any num_samples. With `with_ess`, also the
    weights' effective sample size (log_z_ess)."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")
    _, on_base = _compiled(flow, energy, energy_floor)
    state = log_z_init()
    for i in range(-(-num_samples // CHUNK_SIZE)):
        state = on_base(flow_variables, energy_variables, state, jax.random.fold_in(key, i),
                        min(CHUNK_SIZE, num_samples - i * CHUNK_SIZE))
    log_z, stderr = jax.device_get(log_z_finalize(state))
    if with_ess:
        return float(log_z), float(stderr), float(jax.device_get(log_z_ess(state)))
    return float(log_z), float(stderr)


def log_probs_and_energies(flow: nn.Module, energy: nn.Module, flow_variables: Any,
                           energy_variables: Any, x: np.ndarray,
                           energy_floor: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(log g(x), E(x)) for every row of x (N, D): float64 (N,) each, in padded chunks."""
    on_data, _ = _compiled(flow, energy, energy_floor)
    x = np.asarray(x, np.float32)
    log_g, e = [], []
    for start in range(0, x.shape[0], CHUNK_SIZE):
        chunk = x[start:start + CHUNK_SIZE]
        n = chunk.shape[0]
        padded = np.concatenate([chunk, np.zeros((CHUNK_SIZE - n, x.shape[1]), np.float32)])
        lg, en = jax.device_get(on_data(flow_variables, energy_variables, padded))
        log_g.append(np.asarray(lg[:n], np.float64))
        e.append(np.asarray(en[:n], np.float64))
    return np.concatenate(log_g), np.concatenate(e)


def flow_and_gebm_nll(flow: nn.Module, energy: nn.Module, flow_variables: Any,
                      energy_variables: Any, splits: Mapping[str, np.ndarray], key: Array,
                      num_base_samples: int,
                      energy_floor: Optional[float] = None) -> Dict[str, float]:
    """NLLs (nats per example) of the flow g and of the GEBM g exp(-E) / Z on data splits.

    Returns {'log_z', 'log_z_stderr', 'log_z_ess'} and for each split name s: 'base_<s>_nll'
    (-mean log g), 'gebm_<s>_nll' (-mean log q), 'gebm_<s>_nll_sem' (standard error of the mean
    over the examples; the log Z error `log_z_stderr` adds to it, shared by all examples).
    gebm_<s>_nll is optimistic in expectation (the log of an unbiased Z estimate; see the module
    docstring): read it with log_z_stderr and log_z_ess (the weights' effective sample size).
    """
    log_z, stderr, ess = estimate_log_z(flow, energy, flow_variables, energy_variables, key,
                                        num_base_samples, energy_floor, with_ess=True)
    out = {"log_z": log_z, "log_z_stderr": stderr, "log_z_ess": ess}
    for name, x in splits.items():
        log_g, e = log_probs_and_energies(flow, energy, flow_variables, energy_variables, x,
                                          energy_floor)
        log_q = gebm_log_prob(log_g, e, log_z)
        out[f"base_{name}_nll"] = float(-np.mean(log_g))
        out[f"gebm_{name}_nll"] = float(-np.mean(log_q))
        out[f"gebm_{name}_nll_sem"] = float(np.std(log_q, ddof=1) / math.sqrt(len(log_q)))
    return out
