"""XLA:CPU work-arounds: same functions, written in a form XLA:CPU compiles or runs faster.

Nothing here changes a result beyond float summation order. Measurements, and when each
work-around can be deleted, are in docs/performance.md ("XLA:CPU work-arounds"):

* `with_hwio_convolutions`: lays convolution kernels out HWIO so that the input-gradient of a
  convolution keeps XLA:CPU's fast path inside loops. Delete it (and `gradient_transform`) once
  `python -m experiments.benchmark --section=sampler --hwio_ablation` shows no gap between the
  rows with and without it.
* `threefry2x32`: the Threefry-2x32 cipher in plain element-wise ops, because jax's CPU lowering
  of its own primitive compiles slowly (and, in jax 0.10, drops shard_map's device-varying type).
  Delete it once `jax.extend.random.threefry_2x32` compiles as fast and keeps the type; then
  kale_jax.mcmc.noise calls that instead (same bits, tested in tests/test_xla_cpu.py).
* `on_cpu`: picks a CPU work-around on the CPU and the plain form on every other platform, when
  the program is lowered (`jax.lax.platform_dependent`). kale_jax.networks.common uses it for its
  convolution gradients (kernel gradients, dense adjoint-kernel input gradients,
  space-to-depth stride-2 gradients, sub-pixel transposed convs): on GPU and TPU XLA's own
  convolution gradients are the fast path. `forced_branch` runs either branch on any platform
  (tests, and measuring a work-around's gain on the CPU).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as _jcore
from jax.extend.core import primitives as _prims

Array = jax.Array

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: Array, r: int) -> Array:
    return lax.shift_left(x, np.uint32(r)) | lax.shift_right_logical(x, np.uint32(32 - r))


def threefry2x32(key_data: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011) in element-wise jnp ops.

    The same function as `jax.extend.random.threefry_2x32`, which jax's threefry keys use.

    Args:
      key_data: (..., 2) uint32 key words.
      x0, x1: uint32 counter words, broadcast against key_data[..., 0].

    Returns:
      The two uint32 output words, of the broadcast shape.
    """
    k0, k1 = key_data[..., 0], key_data[..., 1]
    schedule = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0 = x0 + k0
    x1 = x1 + k1
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + schedule[(i + 1) % 3]
        x1 = x1 + schedule[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _hwio_spec(ndim: int) -> tuple[int, ...]:
    """conv rhs_spec (out-feature dim, in-feature dim, spatial dims...) of an (*K, I, O) kernel."""
    return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))


def _is_conv_to_canonicalise(eqn) -> bool:
    return (eqn.primitive is _prims.conv_general_dilated_p
            and tuple(eqn.params['dimension_numbers'].rhs_spec)
            != _hwio_spec(len(eqn.params['dimension_numbers'].rhs_spec)))


def needs_conv_rewrite(jaxpr) -> bool:
    """Whether `jaxpr` (or a jit call inside it) has a convolution whose kernel is not HWIO."""
    for eqn in jaxpr.eqns:
        if _is_conv_to_canonicalise(eqn):
            return True
        if eqn.primitive is _prims.jit_p and needs_conv_rewrite(eqn.params['jaxpr'].jaxpr):
            return True
        if _cond_needs_rewrite(eqn):
            return True
    return False


def _cond_needs_rewrite(eqn) -> bool:
    return (eqn.primitive is _prims.cond_p
            and any(needs_conv_rewrite(b.jaxpr) for b in eqn.params['branches']))


def _eval_cond_with_hwio_kernels(eqn, index, *operands) -> list:
    """A cond (lax.cond / switch / platform_dependent) whose branches are rewritten."""
    branches = [lambda *a, b=b: _eval_with_hwio_kernels(b.jaxpr, b.consts, *a)
                for b in eqn.params['branches']]
    platforms = eqn.params.get('branches_platforms')
    if platforms is None:
        return lax.switch(index, branches, *operands)
    # A platform_dependent cond: rebuild it (its index is a platform_index, staged again).
    per_platform = {p: fn for ps, fn in zip(platforms, branches) if ps is not None for p in ps}
    default = [fn for ps, fn in zip(platforms, branches) if ps is None]
    return lax.platform_dependent(*operands, default=default[0] if default else None,
                                  **per_platform)


def _eval_with_hwio_kernels(jaxpr, consts, *args) -> list:
    """Evaluates `jaxpr` like jax.core.eval_jaxpr, with every convolution kernel that is not laid
    out (*K, I, O) transposed to that layout first; nested jit calls are inlined, the branches
    of conds (including platform_dependent ones) rewritten."""
    env = {}

    def read(v):
        return v.val if isinstance(v, _jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if _is_conv_to_canonicalise(eqn):
            lhs, rhs = values
            numbers = eqn.params['dimension_numbers']
            spec = tuple(numbers.rhs_spec)
            rhs = jnp.transpose(rhs, spec[2:] + (spec[1], spec[0]))
            numbers = lax.ConvDimensionNumbers(numbers.lhs_spec, _hwio_spec(rhs.ndim),
                                               numbers.out_spec)
            outs = [_prims.conv_general_dilated_p.bind(
                lhs, rhs, **dict(eqn.params, dimension_numbers=numbers))]
        elif eqn.primitive is _prims.jit_p:
            inner = eqn.params['jaxpr']
            outs = _eval_with_hwio_kernels(inner.jaxpr, inner.consts, *values)
        elif _cond_needs_rewrite(eqn):
            outs = list(_eval_cond_with_hwio_kernels(eqn, *values))
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def with_hwio_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with every convolution kernel laid out (*K, I, O) (HWIO): same function, faster loops.

    The input-gradient of a convolution is a convolution with the kernel's feature axes swapped.
    Inside a `while` loop (every `lax.scan`) XLA:CPU runs such a convolution on a slow generic
    emitter instead of its convolution library; transposing the kernel explicitly (a cheap copy of
    the weights) restores the fast path. Functions without such convolutions run unchanged.

    Args:
      fn: a function of arrays (pytrees of arrays in, pytree of arrays out), traceable by jax.

    Returns:
      A function with the same signature and results (up to float summation order).
    """

    def wrapped(*args):
        closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not needs_conv_rewrite(closed.jaxpr):
            return fn(*args)
        out_tree = jax.tree.structure(out_shapes)
        flat = _eval_with_hwio_kernels(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(out_tree, flat)

    return wrapped


def gradient_transform(enabled: Optional[bool] = None) -> Optional[Callable]:
    """The transform the MCMC kernels apply to the potential's value-and-gradient function.

    Args:
      enabled: True, False, or None for "on the CPU backend only" (where it matters).

    Returns:
      `with_hwio_convolutions`, or None for no transform.
    """
    if enabled is None:
        enabled = jax.default_backend() == 'cpu'
    return with_hwio_convolutions if enabled else None


# ------------------------------------------------------------------------------------------------
# CPU-only work-arounds chosen per lowering platform.
# ------------------------------------------------------------------------------------------------

_BRANCHES = ('cpu', 'default')
_forced: Optional[str] = None  # set only through `forced_branch`


def on_cpu(cpu_fn: Callable[..., Any], default_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A function that is `cpu_fn` on the CPU and `default_fn` on every other platform.

    The choice is made when the program is lowered, for the platform it is lowered for
    (`jax.lax.platform_dependent`), not from the default backend at trace time: one traced
    function serves the CPU and accelerators (and exports for both). Both branches are traced;
    the compiled program holds only the chosen one. Inside `forced_branch(name)` the named branch
    is traced alone, on any platform.

    Args:
      cpu_fn: the XLA:CPU work-around, a function of arrays.
      default_fn: the same function in its plain form, same signature and output shapes.

    Returns:
      A function of the same arrays, with the same results up to float summation order.
    """
    def dispatched(*args):
        if _forced == 'cpu':
            return cpu_fn(*args)
        if _forced == 'default':
            return default_fn(*args)
        return lax.platform_dependent(*args, cpu=cpu_fn, default=default_fn)

    return dispatched


@contextlib.contextmanager
def forced_branch(branch: str) -> Iterator[None]:
    """Within the block, functions made by `on_cpu` trace only their `branch` on any platform.

    For tests (the accelerator branch run on the CPU) and for measuring what a work-around gains
    on the CPU. It acts when a function is traced: a function jit-compiled before the block keeps
    its cached program, so jit a fresh function inside the block.

    Args:
      branch: 'cpu' (the work-around) or 'default' (the plain form used off the CPU).
    """
    global _forced
    if branch not in _BRANCHES:
        raise ValueError(f"forced_branch: branch={branch!r}; allowed: {_BRANCHES}")
    previous, _forced = _forced, branch
    try:
        yield
    finally:
        _forced = previous
