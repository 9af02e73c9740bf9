"""The resampling convolutions of kale_jax.networks.common equal the plain XLA forms they replace,
in value and in both gradients (input and kernel), and ResampleConv keeps nn.Conv's parameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kale_jax import xla_cpu
from kale_jax.networks import common

DIMS = ("NHWC", "HWIO", "NHWC")


def _same_conv(x, kernel, stride=1):
    return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=DIMS)


REFERENCES = {
    "same": (common.conv_same, _same_conv, 3),
    "same_k1": (common.conv_same, _same_conv, 1),
    "stride2": (common.conv_stride2, lambda x, k: _same_conv(x, k, 2), 4),
    "stride2_k2": (common.conv_stride2, lambda x, k: _same_conv(x, k, 2), 2),
    "transpose2": (common.conv_transpose_stride2,
                   lambda x, k: lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=DIMS),
                   4),
    "upsample_before": (common.upsample_conv3x3,
                        lambda x, k: _same_conv(common.upsample_nearest(x), k), 3),
    "downsample_after": (common.conv3x3_downsample,
                         lambda x, k: common.downsample_mean(_same_conv(x, k)), 3),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_resampling_conv_matches_plain_form_in_value_and_gradients(name):
    fast, plain, k = REFERENCES[name]
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 6, 4, 3))
    kernel = jax.random.normal(kk, (k, k, 3, 5))
    y_fast, pull_fast = jax.vjp(fast, x, kernel)
    y_plain, pull_plain = jax.vjp(plain, x, kernel)
    np.testing.assert_allclose(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, y_plain.shape)
    for got, want in zip(pull_fast(g), pull_plain(g)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("resampling,reference", [
    ("stride2", nn.Conv(7, (4, 4), strides=(2, 2), padding="SAME")),
    ("transpose2", nn.ConvTranspose(7, (4, 4), strides=(2, 2), padding="SAME")),
])
def test_resample_conv_has_the_flax_layers_parameters_and_outputs(resampling, reference):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    init = common.normal_init(0.3)
    reference = reference.clone(kernel_init=init, bias_init=common.normal_init(0.1))
    ours = common.ResampleConv(7, 4, resampling, kernel_init=init,
                               bias_init=common.normal_init(0.1))
    v_ref = reference.init(jax.random.key(2), x)
    v_ours = ours.init(jax.random.key(2), x)
    assert jax.tree.structure(v_ref) == jax.tree.structure(v_ours)
    for a, b in zip(jax.tree.leaves(v_ref), jax.tree.leaves(v_ours)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours.apply(v_ref, x), reference.apply(v_ref, x), rtol=1e-5,
                               atol=1e-5)


def test_resampling_convs_reject_kernels_they_do_not_implement():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="4x4"):
        common.conv_transpose_stride2(x, jnp.zeros((3, 3, 2, 2)))
    with pytest.raises(ValueError, match="3x3"):
        common.upsample_conv3x3(x, jnp.zeros((4, 4, 2, 2)))
    with pytest.raises(ValueError, match="even square kernel"):
        common.conv_stride2(x, jnp.zeros((3, 3, 2, 2)))


def test_same_conv_matches_xla_in_second_order_gradients():
    """The gradient penalty differentiates an input gradient with respect to the kernel."""
    kx, kk = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 5, 5, 3))
    kernel = jax.random.normal(kk, (3, 3, 3, 4))

    def penalty(conv, k):
        g = jax.grad(lambda v: jnp.sum(jnp.tanh(conv(v, k))))(x)
        return jnp.sum(g ** 2)

    want = jax.grad(lambda k: penalty(_same_conv, k))(kernel)
    got = jax.grad(lambda k: penalty(common.conv_same, k))(kernel)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# The XLA:CPU work-arounds run on the CPU only (xla_cpu.on_cpu); elsewhere the plain lax forms.
# ------------------------------------------------------------------------------------------------

def _penalty_grads(conv, x, kernel):
    """(gradient of the zero-centred gradient penalty in (x, kernel), its value): the penalty
    differentiates an input gradient once more, as the energy step does."""
    def penalty(v, k):
        g = jax.grad(lambda u: jnp.sum(jnp.tanh(conv(u, k))))(v)
        return jnp.sum(g ** 2)
    return jax.value_and_grad(penalty, argnums=(0, 1))(x, kernel)


def _values_and_gradients(conv, x, kernel, g):
    """Output, both first-order gradients (pulling back g), penalty and its gradients."""
    y, pull = jax.vjp(conv, x, kernel)
    return y, pull(g), _penalty_grads(conv, x, kernel)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_accelerator_branch_matches_cpu_branch_and_plain_form_to_second_order(name):
    fast, plain, k = REFERENCES[name]
    kx, kk, kg = jax.random.split(jax.random.key(4), 3)
    x = jax.random.normal(kx, (2, 6, 4, 3))
    kernel = 0.3 * jax.random.normal(kk, (k, k, 3, 5))
    g = jax.random.normal(kg, jax.eval_shape(plain, x, kernel).shape)
    want = _values_and_gradients(plain, x, kernel, g)
    with xla_cpu.forced_branch("default"):
        accelerator = _values_and_gradients(fast, x, kernel, g)
    with xla_cpu.forced_branch("cpu"):
        cpu = _values_and_gradients(fast, x, kernel, g)
    # float32 sums of <= 3 * 16 * 5 products of O(1) terms, in another order: |error| ~ 1e-6
    # relative; the penalty gradients are sums of such terms, hence the looser atol.
    for got in (accelerator, cpu):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _resample_chain(x, kernels):
    """Every dispatched conv once: (N, 8, 8, 2) -> (N, 8, 8, 2)."""
    x = common.conv_same(x, kernels[0])             # 3x3, H
    x = common.conv_stride2(x, kernels[1])          # 4x4, H/2
    x = common.conv_transpose_stride2(x, kernels[2])  # 4x4, H
    x = common.conv3x3_downsample(x, kernels[3])    # 3x3, H/2
    return common.upsample_conv3x3(x, kernels[4])   # 3x3, H


def _chain_inputs():
    keys = jax.random.split(jax.random.key(5), 6)
    x = jax.random.normal(keys[0], (2, 8, 8, 2))
    kernels = [0.3 * jax.random.normal(kk, (s, s, 2, 2))
               for kk, s in zip(keys[1:], (3, 4, 4, 3, 3))]
    return x, kernels


def _chain_penalty_grad(x, kernels):
    def penalty(ks):
        g = jax.grad(lambda u: jnp.sum(jnp.tanh(_resample_chain(u, ks))))(x)
        return jnp.sum(g ** 2)
    return jax.grad(penalty)(kernels)


@pytest.fixture(scope="module")
def chain_trace():
    """One trace of the chain's penalty gradient, lowered below for several platforms."""
    return jax.jit(_chain_penalty_grad).trace(*_chain_inputs())


def _count(text, op):
    return text.count(f"stablehlo.{op}")


def test_one_trace_lowers_to_im2col_on_cpu_and_to_xla_gradients_elsewhere(chain_trace):
    cpu = chain_trace.lower(lowering_platforms=("cpu",)).as_text()
    # The CPU program keeps the work-arounds: kernel gradients as im2col matmuls.
    assert _count(cpu, "dot_general") > 0
    plain_convs = None
    for platform in ("tpu", "cuda"):
        text = chain_trace.lower(lowering_platforms=(platform,)).as_text()
        # No im2col patch matmul, no custom-VJP adjoint convs: the same convolutions as the
        # plain lax forms, whose gradients XLA derives (counted once, the same on both).
        assert _count(text, "dot_general") == 0, platform
        assert plain_convs is None or _count(text, "convolution") == plain_convs
        plain_convs = _count(text, "convolution")
    with xla_cpu.forced_branch("default"):
        forced = jax.jit(lambda *a: _chain_penalty_grad(*a)).lower(*_chain_inputs()).as_text()
    assert _count(forced, "dot_general") == 0
    assert _count(forced, "convolution") == plain_convs


def test_cpu_program_is_the_work_around_alone():
    """platform_dependent leaves no conditional in the compiled CPU program: the same
    convolutions and matmuls as the CPU branch traced alone, and the same values."""
    inputs = _chain_inputs()
    dispatched = jax.jit(lambda *a: _chain_penalty_grad(*a)).lower(*inputs).compile()
    with xla_cpu.forced_branch("cpu"):
        alone = jax.jit(lambda *a: _chain_penalty_grad(*a)).lower(*inputs).compile()
    texts = dispatched.as_text(), alone.as_text()
    assert "conditional(" not in texts[0]
    for op in (" convolution(", " dot("):
        assert texts[0].count(op) == texts[1].count(op) > 0, op
    for a, b in zip(jax.tree.leaves(dispatched(*inputs)), jax.tree.leaves(alone(*inputs))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["same", "stride2"])
def test_cpu_kernel_gradient_is_xla_conv_and_matches_plain_to_second_order(name):
    """On the CPU the 3x3 SAME and 4x4 stride-2 convs take XLA's own kernel-gradient conv (no
    im2col matmul), and its derivative in the input matches the plain form's."""
    fast, plain, k = REFERENCES[name]
    kx, kk, kw = jax.random.split(jax.random.key(6), 3)
    x = jax.random.normal(kx, (2, 8, 6, 3))
    kernel = 0.3 * jax.random.normal(kk, (k, k, 3, 5))
    w = jax.random.normal(kw, kernel.shape)

    def mixed(conv, v):
        dk = jax.grad(lambda kern: jnp.sum(jnp.tanh(conv(v, kern))))(kernel)
        return jnp.sum(w * dk)

    with xla_cpu.forced_branch("cpu"):
        text = jax.jit(jax.grad(lambda kern: jnp.sum(fast(x, kern)))).lower(kernel).as_text()
        got = jax.value_and_grad(lambda v: mixed(fast, v))(x)
    assert _count(text, "dot_general") == 0 and _count(text, "convolution") >= 1
    want = jax.value_and_grad(lambda v: mixed(plain, v))(x)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
