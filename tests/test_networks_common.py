"""The resampling convolutions of kale_jax.networks.common equal the plain XLA forms they replace,
in value and in both gradients (input and kernel), and ResampleConv keeps nn.Conv's parameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

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
