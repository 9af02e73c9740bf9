"""The authors' networks (Arbel, Zhou & Gretton's public PyTorch code, MichaelArbel/GeneralizedEBM,
models/generator.py and models/discriminator.py), rebuilt from this package's fast layers.

These are the layers behind `variant='authors'` of the dcgan, sngan and resnet classes (conv.py,
resnet.py): each function below is called inside that class's compact __call__, so the layers it
creates are the class's own children. At 32x32 (the only size the authors' code builds) every
layer, activation, normalisation, spectral norm (one power iteration per training call), output
nonlinearity and parameter count is the authors'; weights are drawn from the same distributions
(PyTorch's defaults, or Xavier-uniform where their code asks for it). Latent 100, 3 channels:

  net     generator   energy      (trainable parameters)
  dcgan   3,573,824   2,759,424
  sngan   3,584,003   5,860,865
  resnet  1,097,603   1,053,825

What differs from ours (docs/design.md, "Networks"): dcgan is PyTorch's DCGAN tutorial net, with
BatchNorm in the energy and a sigmoid on its output; sngan's energy doubles the channels in the
stride-2 convs and its dense layer is not spectrally normalised; the resnet generator has 128
channels and identity shortcuts, its energy averages (not sums) the last feature map.

64x64, which the authors' code does not build, is an extension (documented per function): the
dcgan pair becomes the tutorial's 64x64 net, sngan keeps its three resampling stages on twice
larger maps, resnet adds one residual stage. Layouts are NHWC; PyTorch's transposed convs are
written as the equivalent convs (same parameter shapes up to layout, same function class).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax import checks
from kale_jax.networks import common

Array = jax.Array

VARIANTS = ("ours", "authors")
# Image sides the authors' variants are built for (their code: 32 only; 64 is our extension).
IMAGE_SIZES = (32, 64)

# Weight initialisers as PyTorch draws them. Its default for Linear / Conv2d is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)): variance 1 / (3 fan_in).
# A ConvTranspose2d counts its fan_in from its *output* channels, i.e. our HWIO kernel's fan_out.
# Xavier-uniform with gain g is variance g^2 / fan_avg.
_TORCH_DEFAULT = common.uniform_variance_scaling(1.0 / 3.0, "fan_in")
_TORCH_DEFAULT_TRANSPOSED = common.uniform_variance_scaling(1.0 / 3.0, "fan_out")
_XAVIER = common.uniform_variance_scaling(1.0, "fan_avg")
_XAVIER_SQRT2 = common.uniform_variance_scaling(2.0, "fan_avg")

LEAK_DCGAN = 0.2  # LeakyReLU slope of the dcgan energy
LEAK_SNGAN = 0.1  # LeakyReLU slope of the sngan energy


def _torch_bias(fan_in: int) -> Callable:
    """PyTorch's default bias initialiser: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def width(module) -> int:
    """The module's width, or its variant's default (class attribute default_widths) if None."""
    return module.default_widths[module.variant] if module.width is None else module.width


def check(owner: str, variant: str, image_size: int) -> None:
    """Raises ConfigError (a ValueError) for an unknown variant, or an image size the authors'
    variant does not build."""
    checks.check_choice(variant, f"{owner}.variant", VARIANTS,
                        fix="'ours' (the SNGAN paper's layouts) or 'authors' (the GEBM code's)")
    if variant == "authors":
        checks.check_choice(image_size, f"{owner}.image_size", IMAGE_SIZES,
                            fix="variant='authors' is built for 32 (the authors' size) and 64")


def _conv(features: int, kernel: int, resampling: str, fan_in: int, *, use_bias: bool = True,
          init: Callable = _TORCH_DEFAULT, name: str) -> nn.Module:
    """A fast conv (common.ResampleConv) with PyTorch's bias initialiser for `fan_in`."""
    return common.ResampleConv(features, kernel, resampling, use_bias=use_bias, kernel_init=init,
                               bias_init=_torch_bias(fan_in), name=name)


def _dense(features: int, fan_in: int, *, use_bias: bool = True,
           init: Callable = _TORCH_DEFAULT, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=_torch_bias(fan_in),
                    name=name)


# ------------------------------------------------------------------------------------------------
# dcgan: PyTorch's DCGAN tutorial net as the authors adapted it to 32x32.
# ------------------------------------------------------------------------------------------------

def dcgan_generator(z: Array, *, train: bool, image_size: int, channels: int, width: int,
                    axis_name: Optional[str]) -> Array:
    """z (N, d) -> images (N, S, S, C) in [-1, 1] (tanh).

    4x4x8w (their 4x4 transposed conv of the 1x1 latent, written as a dense layer), then three
    4x4 stride-2 transposed convs to 4w, 2w, w channels, each layer without bias and followed by
    BatchNorm and ReLU; output: a 1x1 transposed conv to C without bias (S = 32) or, at S = 64,
    the tutorial's 4x4 stride-2 transposed conv to C without bias.
    """
    features = 8 * width
    x = _dense(16 * features, 1, use_bias=False, init=_TORCH_DEFAULT_TRANSPOSED,
               name="dense")(z)
    x = x.reshape(z.shape[0], 4, 4, features)
    x = nn.relu(common.batch_norm(train, axis_name, name="bn_dense")(x))
    for i in range(3):
        features //= 2
        x = _conv(features, 4, "transpose2", 1, use_bias=False, init=_TORCH_DEFAULT_TRANSPOSED,
                  name=f"up{i}")(x)
        x = nn.relu(common.batch_norm(train, axis_name, name=f"bn_up{i}")(x))
    if image_size == 32:
        x = _conv(channels, 1, "none", 1, use_bias=False, init=_TORCH_DEFAULT_TRANSPOSED,
                  name="out")(x)
    else:
        x = _conv(channels, 4, "transpose2", 1, use_bias=False, init=_TORCH_DEFAULT_TRANSPOSED,
                  name="out")(x)
    return jnp.tanh(x)


def dcgan_energy(x: Array, *, train: bool, width: int, axis_name: Optional[str]) -> Array:
    """x (N, S, S, C) -> energies (N,) in (0, 1) (a sigmoid, as the authors' 'dcgan').

    Four 4x4 stride-2 convs without bias to w, 2w, 4w, 8w channels, LeakyReLU(0.2), BatchNorm
    after all but the first; then a conv over the whole (S/16 x S/16) map to one value without
    bias (their 2x2 stride-2 conv at S = 32, the tutorial's 4x4 at 64), written as a dense layer.

    The BatchNorm couples the examples of a batch in training mode (train=True: batch
    statistics, averaged over `axis_name`); in inference mode E(x_i) depends on x_i alone.
    """
    for i in range(4):
        x = _conv(width * 2 ** i, 4, "stride2", 1, use_bias=False, name=f"down{i}")(x)
        if i > 0:
            x = common.batch_norm(train, axis_name, name=f"bn_down{i}")(x)
        x = nn.leaky_relu(x, LEAK_DCGAN)
    x = x.reshape(x.shape[0], -1)
    x = _dense(1, 1, use_bias=False, name="out")(x)
    return nn.sigmoid(x[:, 0]).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------
# sngan: the authors' "sngan" pair (a standard CNN; the energy doubles channels when it strides).
# ------------------------------------------------------------------------------------------------

def sngan_generator(z: Array, *, train: bool, image_size: int, channels: int, width: int,
                    axis_name: Optional[str]) -> Array:
    """z (N, d) -> images (N, S, S, C) in [-1, 1] (tanh).

    Dense (with bias) to S/8 x S/8 x 8w, then [BatchNorm, ReLU, 4x4 stride-2 transposed conv
    (with bias)] to 4w, 2w, w channels, BatchNorm, ReLU, a 3x3 (stride-1 transposed) conv to C,
    tanh. Xavier-uniform weights. At S = 64 the same layers work on twice larger maps.
    """
    side = image_size // 8
    features = 8 * width
    x = _dense(side * side * features, z.shape[-1], init=_XAVIER, name="dense")(z)
    x = x.reshape(z.shape[0], side, side, features)
    x = nn.relu(common.batch_norm(train, axis_name, name="bn_dense")(x))
    for i in range(3):
        features //= 2
        x = _conv(features, 4, "transpose2", 16 * features, init=_XAVIER, name=f"up{i}")(x)
        x = nn.relu(common.batch_norm(train, axis_name, name=f"bn_up{i}")(x))
    x = _conv(channels, 3, "none", 9 * channels, init=_XAVIER, name="out")(x)
    return jnp.tanh(x)


def sngan_energy(x: Array, *, train: bool, width: int) -> Array:
    """x (N, S, S, C) -> energies (N,) float32.

    Seven spectrally normalised convs with bias, each followed by LeakyReLU(0.1): 3x3 to w, then
    (4x4 stride 2 to 2c, 3x3 at 2c) for c = w, 2w, 4w; a dense layer (not spectrally normalised,
    as theirs) on the flattened S/8 x S/8 x 8w map. Xavier-uniform weights.
    """
    layers = [(width, 3, "none")]
    for i in range(3):
        layers += [(2 * width * 2 ** i, 4, "stride2"), (2 * width * 2 ** i, 3, "none")]
    for i, (features, kernel, resampling) in enumerate(layers):
        fan_in = kernel * kernel * x.shape[-1]
        conv = _conv(features, kernel, resampling, fan_in, init=_XAVIER, name=f"conv{i}")
        x = common.spectral_norm(conv, name=f"sn_conv{i}")(x, update_stats=train)
        x = nn.leaky_relu(x, LEAK_SNGAN)
    x = x.reshape(x.shape[0], -1)
    x = _dense(1, x.shape[-1], init=_XAVIER, name="out")(x)
    return x[:, 0].astype(jnp.float32)


# ------------------------------------------------------------------------------------------------
# resnet: the authors' "resnet-sn" pair.
# ------------------------------------------------------------------------------------------------

class GeneratorBlock(nn.Module):
    """Residual up-block (N, H, W, c) -> (N, 2H, 2W, c): BatchNorm, ReLU, nearest x2 upsampling,
    3x3 conv, BatchNorm, ReLU, 3x3 conv; shortcut: the upsampled input (identity, no conv)."""
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        c = x.shape[-1]
        h = nn.relu(common.batch_norm(train, self.axis_name, name="bn1")(x))
        h = _conv(c, 3, "upsample_before", 9 * c, init=_XAVIER, name="conv1")(h)
        h = nn.relu(common.batch_norm(train, self.axis_name, name="bn2")(h))
        h = _conv(c, 3, "none", 9 * c, init=_XAVIER, name="conv2")(h)
        return h + common.upsample_nearest(x)


class EnergyBlock(nn.Module):
    """Spectrally normalised residual block (N, H, W, Cin) -> (N, H', W', features), H' = H/2 when
    downsample. Residual branch: [ReLU], 3x3 conv, ReLU, 3x3 conv, [2x2 mean pool] (no ReLU
    first in the `first` block); shortcut: 2x2 mean pool and a 1x1 conv (Xavier gain sqrt(2))
    when downsampling, else the identity."""
    features: int
    downsample: bool
    first: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        def sn(h, kernel, resampling, init, name):
            conv = _conv(self.features, kernel, resampling, kernel * kernel * h.shape[-1],
                         init=init, name=name)
            return common.spectral_norm(conv, name=f"sn_{name}")(h, update_stats=train)

        h = x if self.first else nn.relu(x)
        h = sn(h, 3, "none", _XAVIER, "conv1")
        h = sn(nn.relu(h), 3, "downsample_after" if self.downsample else "none", _XAVIER,
               "conv2")
        if not self.downsample:
            return h + x
        # Theirs pools after the shortcut conv (except in the first block); a 1x1 conv commutes
        # with mean pooling, so pooling first gives the same values for a quarter of the work.
        return h + sn(common.downsample_mean(x), 1, "none", _XAVIER_SQRT2, "shortcut")


def resnet_generator(z: Array, *, train: bool, image_size: int, channels: int, width: int,
                     axis_name: Optional[str]) -> Array:
    """z (N, d) -> images (N, S, S, C) in [-1, 1] (tanh).

    Dense (with bias) to 4x4xw, one GeneratorBlock per x2 stage (3 at S = 32, 4 at 64), all of
    w channels, BatchNorm, ReLU, 3x3 conv to C, tanh. Xavier-uniform weights.
    """
    x = _dense(16 * width, z.shape[-1], init=_XAVIER, name="dense")(z)
    x = x.reshape(z.shape[0], 4, 4, width)
    for i in range(common.num_stages(image_size)):
        x = GeneratorBlock(axis_name, name=f"block{i}")(x, train=train)
    x = nn.relu(common.batch_norm(train, axis_name, name="bn_out")(x))
    x = _conv(channels, 3, "none", 9 * width, init=_XAVIER, name="out")(x)
    return jnp.tanh(x)


def resnet_energy(x: Array, *, train: bool, width: int) -> Array:
    """x (N, S, S, C) -> energies (N,) float32.

    A first EnergyBlock (S -> S/2), downsampling blocks to 8x8, two blocks at 8x8 (all of w
    channels), ReLU, the mean over the 8x8 positions (their AvgPool2d(8)), a spectrally
    normalised dense layer to one value.
    """
    x = EnergyBlock(width, downsample=True, first=True, name="block0")(x, train=train)
    i = 1
    while x.shape[1] > 8:
        x = EnergyBlock(width, downsample=True, name=f"block{i}")(x, train=train)
        i += 1
    for _ in range(2):
        x = EnergyBlock(width, downsample=False, name=f"block{i}")(x, train=train)
        i += 1
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    dense = _dense(1, width, init=_XAVIER, name="out")
    x = common.spectral_norm(dense, name="sn_out")(x, update_stats=train)
    return x[:, 0].astype(jnp.float32)
