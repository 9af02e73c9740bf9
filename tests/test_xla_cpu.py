"""Tests of kale_jax.xla_cpu: each work-around computes the function it replaces."""
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from jax.extend.random import threefry_2x32

from kale_jax import xla_cpu

from helpers import conv_potential


def test_threefry2x32_matches_jax():
    key_data = jax.random.key_data(jax.random.split(jax.random.key(23), 8))
    counters = jnp.arange(2 * 5, dtype=jnp.uint32) * np.uint32(2654435761)  # spread-out words
    expected = jax.vmap(lambda k: threefry_2x32(k, counters))(key_data)
    ours = jnp.concatenate(xla_cpu.threefry2x32(key_data[:, None, :], counters[:5], counters[5:]),
                           1)
    np.testing.assert_array_equal(ours, expected)




def test_hwio_convolutions_rewrites_kernels_and_keeps_the_function():
    grad_fn = jax.value_and_grad(lambda z: jnp.sum(conv_potential(z)))
    z = jax.random.normal(jax.random.key(25), (5, 32))
    # The input gradient of a convolution uses the kernel with swapped feature axes ...
    assert xla_cpu.needs_conv_rewrite(jax.make_jaxpr(grad_fn)(z).jaxpr)
    rewritten = xla_cpu.with_hwio_convolutions(grad_fn)
    # ... which the rewrite removes, also inside a jit call, computing the same function.
    assert not xla_cpu.needs_conv_rewrite(jax.make_jaxpr(rewritten)(z).jaxpr)
    assert not xla_cpu.needs_conv_rewrite(jax.make_jaxpr(
        xla_cpu.with_hwio_convolutions(jax.jit(grad_fn)))(z).jaxpr)
    for a, b in zip(jax.tree.leaves(rewritten(z)), jax.tree.leaves(grad_fn(z))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_functions_without_convolutions_are_left_alone():
    fn = lambda z: (jnp.sin(z), {'sum': jnp.sum(z)})
    z = jnp.arange(6.0).reshape(2, 3)
    assert not xla_cpu.needs_conv_rewrite(jax.make_jaxpr(fn)(z).jaxpr)
    for a, b in zip(jax.tree.leaves(xla_cpu.with_hwio_convolutions(fn)(z)),
                    jax.tree.leaves(fn(z))):
        np.testing.assert_array_equal(a, b)


def test_gradient_transform_is_on_for_cpu_by_default():
    assert xla_cpu.gradient_transform(False) is None
    assert xla_cpu.gradient_transform(True) is xla_cpu.with_hwio_convolutions
    expected = xla_cpu.with_hwio_convolutions if jax.default_backend() == 'cpu' else None
    assert xla_cpu.gradient_transform(None) is expected


def test_on_cpu_is_chosen_for_the_lowering_platform():
    fn = xla_cpu.on_cpu(lambda x: x + 1.0, lambda x: x + 2.0)
    x = jnp.zeros(3)
    assert jax.default_backend() == 'cpu'
    np.testing.assert_array_equal(fn(x), 1.0)                # eager
    np.testing.assert_array_equal(jax.jit(fn)(x), 1.0)       # compiled for the CPU
    traced = jax.jit(fn).trace(x)
    assert '2.000000e+00' in traced.lower(lowering_platforms=('tpu',)).as_text()
    assert '2.000000e+00' not in traced.lower(lowering_platforms=('cpu',)).as_text()
    with xla_cpu.forced_branch('default'):
        np.testing.assert_array_equal(jax.jit(lambda v: fn(v))(x), 2.0)
    with xla_cpu.forced_branch('cpu'):
        np.testing.assert_array_equal(fn(x), 1.0)
    np.testing.assert_array_equal(fn(x), 1.0)                # the switch is restored
    with pytest.raises(ValueError, match="allowed: \\('cpu', 'default'\\)"):
        with xla_cpu.forced_branch('gpu'):
            pass


def test_hwio_convolutions_rewrites_inside_platform_dependent_branches():
    """The networks' convolutions sit in platform_dependent conds (on_cpu): the rewrite must
    reach their branches, or the CPU sampler loses its fast path."""
    potential = xla_cpu.on_cpu(conv_potential, lambda z: conv_potential(z) * 1.0)
    grad_fn = jax.value_and_grad(lambda z: jnp.sum(potential(z)))
    z = jax.random.normal(jax.random.key(26), (5, 32))
    assert xla_cpu.needs_conv_rewrite(jax.make_jaxpr(grad_fn)(z).jaxpr)
    rewritten = xla_cpu.with_hwio_convolutions(grad_fn)
    assert not xla_cpu.needs_conv_rewrite(jax.make_jaxpr(rewritten)(z).jaxpr)
    for a, b in zip(jax.tree.leaves(jax.jit(rewritten)(z)), jax.tree.leaves(grad_fn(z))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # An ordinary lax.cond (no platform) is rewritten too.
    cond_fn = jax.value_and_grad(lambda z: jnp.sum(jax.lax.cond(
        z[0, 0] > 0, conv_potential, lambda v: 2.0 * conv_potential(v), z)))
    rewritten = xla_cpu.with_hwio_convolutions(cond_fn)
    assert xla_cpu.needs_conv_rewrite(jax.make_jaxpr(cond_fn)(z).jaxpr)
    assert not xla_cpu.needs_conv_rewrite(jax.make_jaxpr(rewritten)(z).jaxpr)
    for a, b in zip(jax.tree.leaves(rewritten(z)), jax.tree.leaves(cond_fn(z))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
