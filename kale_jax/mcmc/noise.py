"""Per-chain randomness of the MCMC kernels: one key per chain, folded with the step index.

A kernel receives the `StepKey` of its step, chain c's key folded with the step index t, and
draws what it needs from it (`normal`, `normal_and_uniform`, or jax.random keys from `fold_in`).
Chain c's noise at step t therefore depends on its own key and t only: a chain's path does not
depend on how many chains run or how they are split over devices.

For threefry keys and float32, the draws of chain c at step t are the Threefry cipher under chain
c's key of the counter blocks (t, 0), (t, 1), ... (counter mode, as jax.random itself); other
key types and dtypes use `jax.random.uniform(jax.random.fold_in(key, t), ...)`.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kale_jax import xla_cpu

Array = jax.Array

# The stream an `init` draws from (KLA's initial velocity); steps use streams 0, 1, ...
INIT_STEP = np.uint32(2**32 - 1)


class StepKey(NamedTuple):
    """Every chain's key folded with one step index.

    chain_keys: (chains,) typed PRNG keys, one per chain.
    step: uint32 scalar step index (may be traced); `INIT_STEP` for draws made by `init`.
    """

    chain_keys: Array
    step: Array


class Drawn(NamedTuple):
    """Noise drawn by the caller, used as is by `normal`/`normal_and_uniform` in place of a key.

    normal: (chains, ...) standard normal; uniform: (chains,) in (0, 1), or None.
    """

    normal: Optional[Array]
    uniform: Optional[Array] = None


def _is_typed_key(key: Array) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def chain_keys(key: Array, num_chains: int) -> Array:
    """One typed PRNG key per chain from a single key (typed or raw uint32 (2,)).

    Args:
      key: a single PRNG key.
      num_chains: number of chains.

    Returns:
      (num_chains,) typed keys; pass them, sharded like the positions, to split chains over
      devices and get the same chains.
    """
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not _is_typed_key(key):
        key = jax.random.wrap_key_data(key)
    if key.shape != ():
        raise ValueError(f'key: expected a single PRNG key, got shape {key.shape}.')
    return jax.random.split(key, num_chains)


def resolve_chain_keys(key: Array, num_chains: int) -> Array:
    """Per-chain keys from a single key (split by `chain_keys`) or from per-chain keys.

    Args:
      key: a single key (typed, or raw uint32 (2,)), or one per chain ((chains,) typed or
        (chains, 2) raw uint32).
      num_chains: number of chains.

    Returns:
      (num_chains,) typed keys.
    """
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if not _is_typed_key(key):
        if key.dtype != jnp.uint32 or key.ndim not in (1, 2):
            raise ValueError(
                f'key: expected a PRNG key, or one key per chain, got dtype {key.dtype} '
                f'and shape {key.shape}.')
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return jax.random.split(key, num_chains)
    if key.shape == (num_chains,):
        return key
    raise ValueError(
        f'key: expected a single key or one key per chain (shape ({num_chains},)), '
        f'got key shape {key.shape}.')


def step_key(keys: Array, step: Union[int, Array]) -> StepKey:
    """The `StepKey` of step `step` for per-chain keys `keys` ((chains,) typed).

    Args:
      keys: (chains,) typed per-chain keys (see `chain_keys`).
      step: int scalar in [0, 2^32 - 1], may be traced; every step is its own stream.

    Returns:
      StepKey(keys, step as uint32).
    """
    if isinstance(step, (int, np.integer)):
        if not 0 <= int(step) < 2**32:
            raise ValueError(f'step_index: got {step}, expected 0 <= value < 2^32.')
        step = np.uint32(step)
    return StepKey(keys, jnp.asarray(step).astype(jnp.uint32))


def fold_in(key: StepKey) -> Array:
    """Plain jax.random keys of this step, (chains,) typed, for kernels that use jax.random."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key.chain_keys, key.step)


def _is_threefry(keys: Array) -> bool:
    return str(jax.random.key_impl(keys)) == 'threefry2x32'


def _unit_float32(bits: Array) -> Array:
    """uint32 bits -> float32 uniform in [0, 1) from the top 23 bits (exponent-fill trick)."""
    mantissa = lax.shift_right_logical(bits, np.uint32(9)) | np.uint32(0x3F800000)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0


def normal_and_uniform(key: Union[StepKey, Drawn], like: Array) -> tuple[Array, Array]:
    """A standard normal array shaped like `like` and one uniform per chain, from one stream.

    Args:
      key: the step's StepKey (or Drawn noise, returned as is).
      like: (chains, ...) float array giving the shape and dtype.

    Returns:
      normal (chains, ...) and uniform (chains,) in (0, 1), dtype of `like`. Normals are
      sqrt(2) erfinv(v) for v uniform in (-1, 1), as in jax.random.normal.
    """
    if isinstance(key, Drawn):
        return key.normal, key.uniform
    keys, step = key
    dtype = like.dtype
    size = math.prod(like.shape[1:])
    if _is_threefry(keys) and dtype == jnp.float32:
        # Blocks (t, j), j = 0, 1, ..., two words each; size + 1 words are used.
        blocks = jnp.arange((size + 2) // 2, dtype=jnp.uint32)
        key_data = jax.random.key_data(keys)[:, None, :]                 # (chains, 1, 2)
        bits = jnp.concatenate(xla_cpu.threefry2x32(key_data, step, blocks), axis=1)
        unit = _unit_float32(bits[:, :size + 1])                         # [0, 1)
    else:
        unit = jax.vmap(lambda k: jax.random.uniform(
            jax.random.fold_in(k, step), (size + 1,), dtype))(keys)
    tiny = np.finfo(dtype).tiny
    signed = jnp.clip(2.0 * unit[:, :size] - 1.0, -1.0 + np.finfo(dtype).epsneg, 1.0)
    normal = np.sqrt(2.0).astype(dtype) * lax.erf_inv(signed.astype(dtype))
    uniform = jnp.maximum(unit[:, size], tiny).astype(dtype)           # (0, 1)
    return jnp.reshape(normal, like.shape), uniform


def normal(key: Union[StepKey, Drawn], like: Array) -> Array:
    """The normal draw of `normal_and_uniform` alone: (chains, ...) like `like`."""
    return normal_and_uniform(key, like)[0]


def draw_noise(keys: Array, step_index: Union[int, Array], like: Array) -> tuple[Array, Array]:
    """`normal_and_uniform` of step `step_index` for per-chain keys `keys` ((chains,) typed)."""
    return normal_and_uniform(step_key(keys, step_index), like)
