"""The KALE objective and its companions, as pure functions of energy arrays.

Notation (docs/math.md): P is the data distribution, G the base (the generator's
pushforward), E the energy, A a scalar log-partition estimate.

* energy arrays: `e_data` holds E(x) for a batch x ~ P, shape (n,); `e_fake` holds E(y) for a batch
    y ~ G, shape (m,). Energies are in nats (they enter through exp(-E)).
* KALE(P || G) = sup_{E, A} 1 - E_P[E + A] - E_G[exp(-(E + A))]; for fixed E the best A is
    log E_G[exp(-E)], which turns it into the Donsker-Varadhan form -E_P[E] - log E_G[exp(-E)].

Nothing here calls a network except the penalties, which take an `energy_fn` so the input gradient
can be formed; everything else works on arrays and can be checked against closed forms.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import logsumexp

Array = jax.Array
EnergyFn = Callable[[Array], Array]

PENALTIES = ("gradient", "l2", "gradient_l2", "none")
GAN_CRITERIA = ("logistic", "wasserstein")
# 'donsker': the energy ascends the Donsker-Varadhan form directly, without A (donsker_energy_loss).
CRITERIA = ("kale", "donsker") + GAN_CRITERIA


def energy_loss(e_data: Array, e_fake: Array, log_partition: Array) -> Array:
    """The energy's loss: mean(E(x) + A) + mean(exp(-(E(y) + A))) - 1, minimised over E and A.

    Equal to -F(E, A), the negative of the KALE objective; its minimum over A is at
    A = log mean exp(-e_fake) (see `log_partition`).

    Args:
        e_data: (n,) energies of data samples.
        e_fake: (m,) energies of base samples.
        log_partition: scalar A.
    Returns:
        scalar loss.
    """
    return (jnp.mean(e_data + log_partition)
            + jnp.mean(jnp.exp(-(e_fake + log_partition))) - 1.0)


def log_partition(e_fake: Array) -> Array:
    """log mean_j exp(-e_fake_j), computed stably (log-sum-exp). e_fake: (m,) -> scalar."""
    e_fake = jnp.asarray(e_fake)
    return logsumexp(-e_fake) - math.log(e_fake.shape[0])


def base_loss(e_data: Array, e_fake: Array) -> Array:
    """The base's loss: -mean(E(x)) - log mean exp(-E(B(z))) (the batch KALE estimate, DV form).

    Its gradient with respect to the generator is the generator gradient of E weighted by
    softmax(-e_fake), which pulls the base toward what the energy calls likely.
    """
    return -jnp.mean(e_data) - log_partition(e_fake)


def donsker_energy_loss(e_data: Array, e_fake: Array) -> Array:
    """The energy's loss under criterion 'donsker': mean(E(x)) + log mean exp(-E(y)).

    Minus the Donsker-Varadhan form -mean(E(x)) - log mean exp(-E(y)) of KALE, minimised over E
    alone (no A): it is `energy_loss` at its best A = log mean exp(-e_fake), and its E-gradient
    is mean grad E(x) - sum_j softmax(-e_fake)_j grad E(y_j). It is invariant to E -> E + c, so
    its optimum over all energies is -KL(P || G), reached at E = -log dP/dG + c for any c. The
    log-mean-exp is computed stably (`log_partition`). Unlike `energy_loss` its minibatch
    estimate is biased (the log of a mean), as is the base step's.

    Args:
        e_data: (n,) energies of data samples.
        e_fake: (m,) energies of base samples.
    Returns:
        scalar loss (nats).
    """
    return -base_loss(e_data, e_fake)


def gebm_base_loss(log_g_data: Array, e_fake: Array) -> Array:
    """The base's loss for exact maximum likelihood of the GEBM q = g exp(-E) / Z (density bases).

    -mean_i log g(x_i) + log mean_j exp(-E(y_j)), y_j ~ g: minus the batch GEBM log-likelihood
    mean_i log q(x_i) = mean_i [log g(x_i) - E(x_i)] - log Z with Z = E_g[exp(-E)] estimated by
    log-mean-exp, dropping mean_i E(x_i), which does not depend on the base. In the energy (for
    fixed g) the same log-likelihood is -E_P[E] - log E_g[exp(-E)], the Donsker-Varadhan form of
    KALE, so `energy_loss` (whose minimum over A is exactly that) and this loss ascend one
    objective. Compared with `base_loss`, the log-partition term has the opposite sign (it pushes
    base mass away from where E is low, which the energy already up-weights) and the data term
    log g keeps the base's density on the data: for fixed E the optimum is g proportional to
    p exp(E), i.e. q = p, whereas `base_loss` alone is optimal for a base concentrated where E is
    lowest.

    Args:
        log_g_data: (n,) base log densities log g(x_i) of data samples (nats).
        e_fake: (m,) energies of base samples.
    Returns:
        scalar loss (nats per example).
    """
    return -jnp.mean(log_g_data) + log_partition(e_fake)


def effective_sample_size(e_fake: Array) -> Array:
    """Kish's effective sample size of the weights exp(-e_fake): (sum w)^2 / sum w^2 in [1, m].

    The log-partition estimate log mean exp(-E) and its gradient are dominated by a few samples
    when this is small compared with m. e_fake: (m,) -> scalar.
    """
    neg = -jnp.asarray(e_fake)
    return jnp.exp(2.0 * logsumexp(neg) - logsumexp(2.0 * neg))


def estimate(e_data: Array, e_fake: Array, log_partition: Array | None = None) -> Array:
    """The KALE estimate from energies.

    With `log_partition` (A) given: the dual form 1 - mean(e_data + A) - mean(exp(-(e_fake + A))).
    Without: the Donsker-Varadhan form -mean(e_data) - log mean exp(-e_fake), which is the dual form
    at its best A. The dual form is never above the DV form for the same energies.
    """
    if log_partition is None:
        return base_loss(e_data, e_fake)
    return -energy_loss(e_data, e_fake, log_partition)


class LogPartitionState(NamedTuple):
    """Running state of a streaming log mean exp(-e): a running log-sum-exp and a count."""
    log_sum: Array  # scalar, log sum_j exp(-e_j) over the batches seen so far
    count: Array  # scalar float, how many energies were folded in


def log_partition_init() -> LogPartitionState:
    """An empty streaming state (log-sum of nothing is -inf)."""
    return LogPartitionState(log_sum=jnp.array(-jnp.inf, jnp.float32),
                             count=jnp.array(0.0, jnp.float32))


def log_partition_update(state: LogPartitionState, e_fake: Array) -> LogPartitionState:
    """Folds a batch of base-sample energies (m,) into the running state."""
    batch_log_sum = logsumexp(-jnp.asarray(e_fake, jnp.float32))
    return LogPartitionState(log_sum=jnp.logaddexp(state.log_sum, batch_log_sum),
                             count=state.count + jnp.asarray(e_fake).shape[0])


def log_partition_finalize(state: LogPartitionState) -> Array:
    """log mean exp(-e) over everything folded in: the Monte-Carlo estimate of A."""
    return state.log_sum - jnp.log(state.count)


def gradient_penalty(energy_fn: EnergyFn, x_real: Array, x_fake: Array,
                     key: Array | None = None, *, weights: Array | None = None) -> Array:
    """Zero-centred squared input-gradient norm of E at random interpolates.

    x_hat = a x_real + (1 - a) x_fake with a ~ U[0, 1] per example; returns mean_i |grad E(x_hat_i)|^2
    (not WGAN-GP's (|grad| - 1)^2). `energy_fn` maps (n, ...) -> (n,) and must not couple examples
    (use inference-mode normalisation), so the gradient of the sum gives each example's gradient.

    Args:
        energy_fn: (n, ...) -> (n,).
        x_real, x_fake: (n, ...) data and base samples.
        key: draws the weights a when `weights` is not given.
        weights: the interpolation weights a, shape (n,), if the caller draws them itself (e.g.
            for a global batch split over devices, so that the draw does not depend on them).
    """
    n = x_real.shape[0]
    if weights is None:
        if key is None:
            raise ValueError("gradient_penalty needs `key` or `weights`")
        weights = jax.random.uniform(key, (n,), dtype=x_real.dtype)
    a = jnp.reshape(weights, (n,) + (1,) * (x_real.ndim - 1)).astype(x_real.dtype)
    x_hat = a * x_real + (1.0 - a) * x_fake
    grads = jax.grad(lambda x: jnp.sum(energy_fn(x)))(x_hat)
    return jnp.mean(jnp.sum(jnp.square(grads).reshape(n, -1), axis=-1))


def l2_penalty(params: Any) -> Array:
    """Sum of squared entries over every leaf of a parameter pytree."""
    return sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def penalty(name: str, *, energy_fn: EnergyFn, params: Any, x_real: Array, x_fake: Array,
            key: Array | None = None, weights: Array | None = None) -> Array:
    """The energy regulariser named `name` (one of PENALTIES). 'gradient_l2' is the sum of both.

    `key` or `weights` go to `gradient_penalty` (the interpolation weights, (n,)).
    """
    if name not in PENALTIES:
        raise ValueError(f"penalty {name!r} is not one of {PENALTIES}")
    total = jnp.zeros((), jnp.float32)
    if name in ("gradient", "gradient_l2"):
        total = total + gradient_penalty(energy_fn, x_real, x_fake, key, weights=weights)
    if name in ("l2", "gradient_l2"):
        total = total + l2_penalty(params)
    return total


def soft_floor(energy: Array, floor: float = -10.0) -> Array:
    """relu(E - floor) + floor = max(E, floor), as in the reference code (model.energy_floor).

    Despite the name (the reference's), this is a hard floor: below `floor` the output is
    constant and its gradient in E is 0.

    Args:
      energy: energies, any shape.
      floor: the lowest value kept.
    Returns:
      max(energy, floor), the shape of `energy`.
    """
    return jax.nn.relu(energy - floor) + floor


def soft_clip_gradients(exclude: Sequence[str] = ()) -> optax.GradientTransformation:
    """Per-element g -> 2g / (1 + g^2): bounded by 1 in magnitude, about 2g for small g.

    The map is monotone only for |g| <= 1 (it peaks at g = 1 and falls towards 0 beyond), so it
    suits gradients of network weights, not a gradient that can be large in a direction that
    matters. The training passes exclude=('log_partition',): A's gradient 1 - mean exp(-(E + A))
    lies in (-inf, 1), and clipped this way a far too small A would get a smaller push the worse
    it is. (The reference code maps A's gradient by g / (1 - g) instead, trainer.grad_clip in
    MichaelArbel/GeneralizedEBM; we leave it to Adam, which normalises its scale.)

    Args:
      exclude: top-level keys of the gradient dict left unchanged.
    Returns:
      an optax transformation (stateless).
    """
    exclude = tuple(exclude)

    def clip(tree):
        return jax.tree_util.tree_map(lambda g: 2.0 * g / (1.0 + jnp.square(g)), tree)

    def update_fn(updates, state, params=None):
        del params
        if not exclude:
            return clip(updates), state
        return {k: v if k in exclude else clip(v) for k, v in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _check_criterion(criterion: str) -> None:
    if criterion not in GAN_CRITERIA:
        raise ValueError(f"GAN criterion {criterion!r} is not one of {GAN_CRITERIA}")


def gan_energy_loss(criterion: str, e_data: Array, e_fake: Array) -> Array:
    """Discriminator loss of a GAN baseline on the energy network, with logit D = -E.

    'logistic': -log sigmoid(D(x)) - log(1 - sigmoid(D(y))) = softplus(E(x)) + softplus(-E(y)).
    'wasserstein': mean D(y) - mean D(x) = mean E(x) - mean E(y) (pair with a gradient penalty).
    Data gets low energy in both, as in the GEBM.
    """
    _check_criterion(criterion)
    if criterion == "logistic":
        return jnp.mean(jax.nn.softplus(e_data)) + jnp.mean(jax.nn.softplus(-e_fake))
    return jnp.mean(e_data) - jnp.mean(e_fake)


def gan_base_loss(criterion: str, e_data: Array, e_fake: Array) -> Array:
    """Generator loss of a GAN baseline, with logit D = -E.

    'logistic' (non-saturating): -log sigmoid(D(G(z))) = softplus(E(G(z))).
    'wasserstein': -mean D(G(z)) = mean E(G(z)).
    `e_data` is unused (kept so every criterion has one signature).
    """
    _check_criterion(criterion)
    del e_data
    if criterion == "logistic":
        return jnp.mean(jax.nn.softplus(e_fake))
    return jnp.mean(e_fake)
