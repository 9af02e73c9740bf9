"""An energy-only baseline: an EBM in data space trained by maximum likelihood with Langevin.

The model is p(x) ∝ exp(-E(x)) on data space, with no base. Maximum likelihood needs samples of
the model for the negative phase; they come from short Langevin runs in data space whose starts
are drawn from a replay buffer of earlier chain ends (persistent chains) or, with probability
`reinit_prob`, fresh from a fixed initial distribution (Du & Mordatch 2019). This is the EBM of
the paper's toy comparison (ground truth, GAN, GEBM, EBM), where it "gets the density roughly but
loses the thin support".

Everything here is a pure function of an energy function `energy_fn(x (n, *shape)) -> (n,)` or of
a Linen energy module; nothing does I/O.

    spec = EBMSpec(energy=MLPEnergy(...), global_batch_size=128, langevin_steps=40,
                   step_size=0.01, buffer_size=10000)
    tx = optax.adam(1e-3)
    state = init_state(jax.random.PRNGKey(0), spec, tx, example_shape=(2,))
    state, metrics = jax.jit(functools.partial(train_step, spec, tx))(state, batch)

Langevin (`langevin`), for step size s and xi ~ N(0, I) per chain and step:

    x <- x - s grad E(x) + noise_scale * xi,    noise_scale = sqrt(2 s) by default,

the unadjusted Langevin algorithm whose stationary law tends to exp(-E) as s -> 0 (for a
quadratic E = a x^2 / 2 it is N(m, 1 / (a (1 - a s / 2))) exactly). Short-run EBMs in practice
decouple the noise from the step (Du & Mordatch 2019; Nijkamp et al. 2019, "Learning non-
convergent non-persistent short-run MCMC"): a noise_scale much smaller than sqrt(2 s) makes the
chains move faster toward low energy and the learned E is then a model *of the sampler*, not a
density whose samples are exp(-E); pass `noise_scale` to do that. Only input gradients are taken.

Training (`train_step`) minimises, over the energy's parameters,

    loss = mean E(x_data) - mean E(x_neg) + alpha (mean E(x_data)^2 + mean E(x_neg)^2),

with the negatives x_neg under stop_gradient (`loss`). Its gradient for alpha = 0 is
E_data[grad E] - E_neg[grad E], the maximum-likelihood gradient when x_neg ~ exp(-E); the alpha
term is Du & Mordatch's energy-magnitude regulariser, which keeps energies near 0.

Randomness: the draws of step t come from fold_in(state.key, t): a resumed run repeats an
uninterrupted one. Langevin noise is per chain (kale_jax.hmc.chain_keys / draw_noise), so a
chain's path depends on its own key and start only, and data-parallel training (`axis_name`)
gives the same result on any number of devices.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kale_jax import hmc, kale

Array = jax.Array
EnergyFn = Callable[[Array], Array]
Metrics = Dict[str, Array]

INITS = ("uniform", "normal")


# --------------------------------------------------------------------------------- Langevin
def langevin(key: Array, energy_fn: EnergyFn, x0: Array, *, num_steps: int,
             step_size: float | Array, noise_scale: Optional[float | Array] = None,
             clip: Optional[Tuple[float, float]] = None, unroll: int = 1,
             hwio_convolutions: Optional[bool] = None) -> Array:
    """Runs `num_steps` Langevin steps x <- x - step_size grad E(x) + noise_scale xi per chain.

    Jit- and vmap-friendly (a lax.scan over steps). Only input gradients are computed: the
    gradient of sum(energy_fn(x)) with respect to x, which is every chain's own gradient as long
    as `energy_fn` does not couple examples (inference mode, no batch statistics).

    Args:
      key: a single PRNG key (split into one key per chain by kale_jax.hmc.chain_keys), or one
        key per chain ((chains,) typed or (chains, 2) raw): chain c's noise at step t depends on
        its key and t only, so chains split over devices reproduce a single call.
      energy_fn: x (chains, *shape) -> energies (chains,).
      x0: starts, (chains, *shape) float.
      num_steps: number of steps (>= 0; 0 returns x0).
      step_size: s > 0, the gradient's coefficient (units of x^2 per unit of energy).
      noise_scale: standard deviation of the added Gaussian noise per coordinate and step;
        None gives sqrt(2 s), the Langevin discretisation of exp(-E). Smaller values are the
        short-run practice (module docstring).
      clip: None, or (low, high): positions are clipped into [low, high] after every step (as
        image EBMs keep pixels in range).
      unroll: lax.scan unroll factor.
      hwio_convolutions: see kale_jax.hmc.with_hwio_convolutions; None: on the CPU backend.
    Returns:
      final positions, same shape and dtype as x0.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps!r}")
    if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
        raise ValueError(f"clip must be None or (low, high) with low < high, got {clip!r}")
    keys = _chain_keys(key, x0.shape[0])
    noise = jnp.sqrt(2.0 * step_size) if noise_scale is None else noise_scale

    def total(x):
        return jnp.sum(energy_fn(x))

    grad_fn = jax.grad(total)
    if (jax.default_backend() == "cpu") if hwio_convolutions is None else hwio_convolutions:
        grad_fn = hmc.with_hwio_convolutions(grad_fn)

    def step(x, t):
        xi, _ = hmc.draw_noise(keys, t, x)
        x = x - step_size * grad_fn(x) + noise * xi
        if clip is not None:
            x = jnp.clip(x, clip[0], clip[1])
        return x, None

    x, _ = jax.lax.scan(step, x0, jnp.arange(num_steps, dtype=jnp.uint32), unroll=unroll)
    return x


def _chain_keys(key: Array, num_chains: int) -> Array:
    """A single key (typed, or raw (2,)) -> chain_keys; per-chain keys are returned typed."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return hmc.chain_keys(key, num_chains)
    if key.shape != (num_chains,):
        raise ValueError(f"key: expected a single key or one key per chain (shape "
                         f"({num_chains},)), got key shape {key.shape}")
    return key


# ---------------------------------------------------------------------- initial distribution
class InitialDistribution(NamedTuple):
    """Where fresh chains start: 'uniform' over the box [low, high]^D or 'normal' N(0, scale^2 I).

    Hashable (a static part of EBMSpec). Uniform over a box that holds the data is the usual
    choice (Du & Mordatch: uniform noise over the pixel range).
    """
    kind: str = "uniform"
    low: float = -1.0
    high: float = 1.0
    scale: float = 1.0

    def check(self) -> None:
        """ValueError unless the fields describe a distribution."""
        if self.kind not in INITS:
            raise ValueError(f"initial distribution kind must be one of {INITS}, got {self.kind!r}")
        if self.kind == "uniform" and not self.low < self.high:
            raise ValueError(f"uniform box needs low < high, got ({self.low}, {self.high})")
        if self.kind == "normal" and not self.scale > 0:
            raise ValueError(f"normal scale must be > 0, got {self.scale}")

    def sample(self, key: Array, num: int, shape: Tuple[int, ...],
               dtype: Any = jnp.float32) -> Array:
        """`num` draws: (num, *shape)."""
        if self.kind == "uniform":
            return jax.random.uniform(key, (num,) + tuple(shape), dtype, self.low, self.high)
        return self.scale * jax.random.normal(key, (num,) + tuple(shape), dtype)


# ------------------------------------------------------------------------------ replay buffer
@flax.struct.dataclass
class ReplayBuffer:
    """A fixed-capacity FIFO store of chain ends (a pytree of arrays; updated functionally).

    Attributes:
      samples: (capacity, *shape); filled from the initial distribution at creation, so every
        slot always holds a valid start.
      next_index: int32 scalar, the slot the next `push_buffer` writes first (oldest entries are
        overwritten first).
    """
    samples: Array
    next_index: Array

    @property
    def capacity(self) -> int:
        return self.samples.shape[0]


def init_buffer(key: Array, capacity: int, shape: Tuple[int, ...],
                initial: InitialDistribution) -> ReplayBuffer:
    """A buffer of `capacity` draws of `initial`, next write at slot 0."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity!r}")
    return ReplayBuffer(samples=initial.sample(key, capacity, shape),
                        next_index=jnp.zeros((), jnp.int32))


def draw_starts(buffer: ReplayBuffer, key: Array, num: int, initial: InitialDistribution,
                reinit_prob: float | Array) -> Tuple[Array, Array]:
    """Chain starts: each, independently, a uniformly chosen buffer entry (with replacement) with
    probability 1 - reinit_prob, else a fresh draw of `initial`.

    Args:
      buffer: the replay buffer.
      key: PRNG key (three sub-draws: slots, coins, fresh starts).
      num: number of starts.
      initial: the fresh-start distribution.
      reinit_prob: probability of a fresh start, in [0, 1].
    Returns:
      (starts (num, *shape), fresh (num,) bool: True where the start is a fresh draw).
    """
    key_slot, key_coin, key_fresh = jax.random.split(key, 3)
    slots = jax.random.randint(key_slot, (num,), 0, buffer.capacity)
    fresh = jax.random.uniform(key_coin, (num,)) < reinit_prob
    new = initial.sample(key_fresh, num, buffer.samples.shape[1:], buffer.samples.dtype)
    mask = fresh.reshape((num,) + (1,) * (buffer.samples.ndim - 1))
    return jnp.where(mask, new, buffer.samples[slots]), fresh


def push_buffer(buffer: ReplayBuffer, x: Array) -> ReplayBuffer:
    """Writes the rows of x (n, *shape), n <= capacity, into slots next_index, next_index + 1, ...
    (mod capacity), overwriting the oldest entries."""
    n = x.shape[0]
    if n > buffer.capacity:
        raise ValueError(f"cannot push {n} samples into a buffer of capacity {buffer.capacity}")
    slots = (buffer.next_index + jnp.arange(n, dtype=jnp.int32)) % buffer.capacity
    return ReplayBuffer(samples=buffer.samples.at[slots].set(x.astype(buffer.samples.dtype)),
                        next_index=(buffer.next_index + n) % buffer.capacity)


# ------------------------------------------------------------------------------------- loss
def loss(e_data: Array, e_neg: Array, alpha: float | Array = 0.0) -> Array:
    """mean E(data) - mean E(neg) + alpha (mean E(data)^2 + mean E(neg)^2).

    Args:
      e_data: (n,) energies of data examples.
      e_neg: (m,) energies of negatives (model samples); the caller computes them on samples
        under stop_gradient, so no gradient flows through the sampler.
      alpha: weight of Du & Mordatch's energy-magnitude regulariser (>= 0); 0 leaves the plain
        maximum-likelihood gradient.
    Returns:
      scalar loss (nats).
    """
    regulariser = jnp.mean(jnp.square(e_data)) + jnp.mean(jnp.square(e_neg))
    return jnp.mean(e_data) - jnp.mean(e_neg) + alpha * regulariser


# ------------------------------------------------------------------------------------ state
@dataclasses.dataclass(frozen=True)
class EBMSpec:
    """The static settings of EBM training (hashable: compiled steps are cached by it).

    Attributes:
      energy: Linen module called as energy.apply(variables, x, train=bool) -> (n,).
      global_batch_size: data examples and negatives per step over all devices.
      langevin_steps: Langevin steps per training step (from the drawn starts).
      step_size, noise_scale, clip: Langevin settings (see `langevin`).
      buffer_size: replay-buffer capacity (>= global_batch_size).
      reinit_prob: probability that a chain starts fresh from `initial`.
      initial: the fresh-start distribution (also fills the buffer at the start).
      alpha: energy-magnitude regulariser weight (see `loss`).
      energy_floor: None, or energies go through kale.soft_floor(E, floor) everywhere.
      unroll: lax.scan unroll of the Langevin loop.
    """
    energy: nn.Module
    global_batch_size: int
    langevin_steps: int
    step_size: float
    buffer_size: int
    noise_scale: Optional[float] = None
    clip: Optional[Tuple[float, float]] = None
    reinit_prob: float = 0.05
    initial: InitialDistribution = InitialDistribution()
    alpha: float = 0.0
    energy_floor: Optional[float] = None
    unroll: int = 1

    def __post_init__(self):
        self.initial.check()
        if self.buffer_size < self.global_batch_size:
            raise ValueError(f"buffer_size={self.buffer_size} must be >= global_batch_size="
                             f"{self.global_batch_size} (each step writes a batch of chain ends)")
        if not 0.0 <= self.reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob={self.reinit_prob} must be in [0, 1]")


@flax.struct.dataclass
class EBMState:
    """Everything EBM training needs to continue exactly where it stopped (a pytree).

    Attributes:
      params: the energy's 'params' collection.
      energy_state: its 'batch_stats' collection ({} for a network without state).
      opt_state: the optimiser's state over params.
      buffer: the replay buffer of chain ends.
      step: int32 scalar, training steps taken.
      key: the run's root key (raw uint32, shape (2,)); step t draws from fold_in(key, t).
    """
    params: Any
    energy_state: Any
    opt_state: optax.OptState
    buffer: ReplayBuffer
    step: Array
    key: Array


def init_state(key: Array, spec: EBMSpec, tx: optax.GradientTransformation,
               example_shape: Tuple[int, ...]) -> EBMState:
    """A fresh state: initialised energy, optimiser, a buffer of initial draws, step 0.

    Args:
      key: PRNG key (e.g. jax.random.PRNGKey(seed)); split into the energy's init key, the
        buffer's key and the run's root key.
      spec: the static settings.
      tx: the optimiser of the energy parameters (e.g. optax.adam).
      example_shape: the shape of one data example.
    """
    key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    key_energy, key_buffer, key_run = jax.random.split(jnp.asarray(key, jnp.uint32), 3)
    variables = spec.energy.init(key_energy, jnp.zeros((1,) + tuple(example_shape), jnp.float32),
                                 train=False)
    unknown = set(variables) - {"params", "batch_stats"}
    if unknown:
        raise ValueError(f"energy variables have collections {sorted(unknown)}; only 'params' "
                         "and 'batch_stats' are supported")
    params = variables["params"]
    return EBMState(params=params, energy_state=dict(variables.get("batch_stats", {})),
                    opt_state=tx.init(params),
                    buffer=init_buffer(key_buffer, spec.buffer_size, tuple(example_shape),
                                       spec.initial),
                    step=jnp.zeros((), jnp.int32), key=key_run)


def _variables(params: Any, energy_state: Any) -> Dict[str, Any]:
    return {"params": params, "batch_stats": energy_state} if energy_state else {"params": params}


def energy_fn(spec: EBMSpec, params: Any, energy_state: Any) -> EnergyFn:
    """E(x) in inference mode (no state updated), soft-floored if spec.energy_floor: (n, ...) ->
    (n,). Build it inside the jitted function, with params as traced arguments."""

    def apply(x: Array) -> Array:
        e = spec.energy.apply(_variables(params, energy_state), x, train=False)
        return e if spec.energy_floor is None else kale.soft_floor(e, spec.energy_floor)

    return apply


def sample(key: Array, spec: EBMSpec, params: Any, energy_state: Any, num: int,
           example_shape: Tuple[int, ...], num_steps: int) -> Array:
    """Model samples from fresh starts: `num` chains from spec.initial, `num_steps` Langevin
    steps with the training sampler's settings. Returns (num, *example_shape)."""
    key_start, key_chain = jax.random.split(key)
    x0 = spec.initial.sample(key_start, num, example_shape)
    return langevin(key_chain, energy_fn(spec, params, energy_state), x0, num_steps=num_steps,
                    step_size=spec.step_size, noise_scale=spec.noise_scale, clip=spec.clip,
                    unroll=spec.unroll)


# ------------------------------------------------------------------------------ the step
def _rows(global_array: Array, local_size: int, axis_name: Optional[str]) -> Array:
    """This device's rows of an array drawn for the global batch."""
    if axis_name is None:
        return global_array
    start = jax.lax.axis_index(axis_name) * local_size
    return jax.lax.dynamic_slice_in_dim(global_array, start, local_size, axis=0)


def _gather(x: Array, axis_name: Optional[str]) -> Array:
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _pmean(tree: Any, axis_name: Optional[str]) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def train_step(spec: EBMSpec, tx: optax.GradientTransformation, state: EBMState, x: Array, *,
               axis_name: Optional[str] = None) -> Tuple[EBMState, Metrics]:
    """One maximum-likelihood update of the energy with replay-buffer Langevin negatives.

    With key = fold_in(state.key, state.step) and (key_draw, key_chain) = split(key):
      1. starts = draw_starts(buffer, key_draw, global_batch_size, initial, reinit_prob);
      2. negatives = langevin(chain_keys(key_chain, global_batch_size), E, starts, ...) with the
         current parameters (each device runs its rows of the chains);
      3. parameters take one `tx` step on grad of loss(E(x), E(stop_gradient(negatives)), alpha)
         (energy in train mode on [x; negatives], its 'batch_stats' update kept);
      4. the negatives are pushed into the buffer; step + 1.

    Args:
      spec: static settings.
      tx: the optimiser the state's opt_state belongs to.
      state: EBMState (replicated when data-parallel).
      x: this device's data, (global_batch_size / devices, *shape).
      axis_name: None on one device; inside shard_map / pmap, the data axis: random draws are
        made for the global batch and sliced, energies all-gathered (global-batch loss),
        gradients and network state pmean'd, so the result does not depend on the device count.
    Returns:
      (new state, metrics): scalar metrics identical on every device: loss, energy_data and
      energy_neg (mean energies), reinit_fraction (share of fresh starts), langevin_move (mean
      distance from start to negative).
    """
    n = x.shape[0]
    key = jax.random.fold_in(state.key, state.step)
    key_draw, key_chain = jax.random.split(key)
    starts_all, fresh = draw_starts(state.buffer, key_draw, spec.global_batch_size, spec.initial,
                                    spec.reinit_prob)
    starts = _rows(starts_all, n, axis_name)
    keys = _rows(hmc.chain_keys(jax.random.wrap_key_data(key_chain), spec.global_batch_size), n,
                 axis_name)
    negatives = langevin(keys, energy_fn(spec, state.params, state.energy_state), starts,
                         num_steps=spec.langevin_steps, step_size=spec.step_size,
                         noise_scale=spec.noise_scale, clip=spec.clip, unroll=spec.unroll)
    negatives = jax.lax.stop_gradient(negatives)

    def loss_fn(params):
        both = jnp.concatenate([x, negatives.astype(x.dtype)])
        if state.energy_state:
            e, updates = spec.energy.apply(_variables(params, state.energy_state), both,
                                           train=True, mutable=["batch_stats"])
            new_energy_state = dict(updates["batch_stats"])
        else:
            e, new_energy_state = spec.energy.apply({"params": params}, both, train=True), {}
        if spec.energy_floor is not None:
            e = kale.soft_floor(e, spec.energy_floor)
        e_data, e_neg = _gather(e[:n], axis_name), _gather(e[n:], axis_name)
        return loss(e_data, e_neg, spec.alpha), (e_data, e_neg, new_energy_state)

    grads, (e_data, e_neg, new_energy_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    # With axis_name, each device's gradient of the (identical) global loss is the sum over
    # devices of their rows' terms times the device count (all_gather's transpose sums the
    # identical cotangents); the mean over devices is then the global-batch gradient.
    grads = _pmean(grads, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    all_negatives = _gather(negatives, axis_name)
    move = jnp.sqrt(jnp.sum(jnp.square(negatives - starts).reshape(n, -1), axis=1))
    metrics = {
        "loss": loss(e_data, e_neg, spec.alpha),
        "energy_data": jnp.mean(e_data),
        "energy_neg": jnp.mean(e_neg),
        "reinit_fraction": jnp.mean(fresh.astype(jnp.float32)),
        "langevin_move": _pmean(jnp.mean(move), axis_name),
    }
    new_state = state.replace(
        params=optax.apply_updates(state.params, updates),
        energy_state=_pmean(new_energy_state, axis_name),
        opt_state=opt_state,
        buffer=push_buffer(state.buffer, all_negatives),
        step=state.step + 1)
    return new_state, metrics


__all__ = ["EBMSpec", "EBMState", "INITS", "InitialDistribution", "ReplayBuffer", "draw_starts",
           "energy_fn", "init_buffer", "init_state", "langevin", "loss", "push_buffer", "sample",
           "train_step"]
