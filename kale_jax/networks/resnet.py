"""SN-ResNet generator and energy of SNGAN (Miyato et al. 2018, Table 4, CIFAR-10 models).

Shapes: latents z (N, latent_dim) -> images (N, S, S, C) in [-1, 1]; images (N, S, S, C) ->
energies (N,) float32, NHWC, S = image_size in (32, 64).

Generator: dense to 4x4 x w, residual up-blocks to S (BatchNorm, ReLU, nearest x2 upsampling,
two 3x3 convs; shortcut: upsampling and a 1x1 conv), BatchNorm, ReLU, 3x3 conv to C, tanh.
Energy: a first residual block (conv, ReLU, conv, 2x2 average pool; shortcut: pool, 1x1 conv),
residual down-blocks to 8x8, two residual blocks at 8x8, ReLU, sum over positions, dense to 1.
Every conv and dense of the energy is spectrally normalised; BatchNorm is generator-only.

Channels: width w at every resolution up to 32x32 (the paper: generator w = 256, energy
w = 128); at S = 64 the extra 64x64 stage has w / 2 channels, which keeps the cost of that stage
equal to the 32x32 stage's instead of four times it.

variant='authors' builds the authors' "resnet-sn" pair instead (kale_jax/networks/authors.py):
a generator of 128 channels with identity shortcuts, an energy that averages its last feature
map; docs/design.md, "Networks", says what differs and why both exist.
"""
from __future__ import annotations

from typing import ClassVar, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax.networks import authors, common

Array = jax.Array

# SNGAN's ResNets use Glorot-uniform weights, scaled by sqrt(2) in the residual branches.
_RESIDUAL_INIT = common.uniform_variance_scaling(2.0, "fan_avg")
_INIT = common.uniform_variance_scaling(1.0, "fan_avg")


def _channels(width: int, resolution: int) -> int:
    """Channels of a stage working at resolution x resolution."""
    return width if resolution <= 32 else max(1, width // 2)


def _check(module: nn.Module) -> None:
    owner = type(module).__name__
    common.check_image_size(owner, module.image_size, module.image_sizes)
    authors.check(owner, module.variant, module.image_size)
    common.check_positive(owner, "channels", module.channels)
    if module.width is not None:
        common.check_positive(owner, "width", module.width)


def _conv(features: int, kernel: int, init, name: str) -> nn.Module:
    """nn.Conv(features, (kernel, kernel), padding='SAME') with faster gradients (same params)."""
    return common.ResampleConv(features, kernel, "none", kernel_init=init, name=name)


class GeneratorBlock(nn.Module):
    """Residual up-block: (N, H, W, Cin) -> (N, 2H, 2W, features)."""
    features: int
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        h = nn.relu(common.batch_norm(train, self.axis_name, name="bn1")(x))
        # conv1(upsample(h)) and conv(upsample(x)) computed at the low resolution (same values).
        h = common.ResampleConv(self.features, 3, "upsample_before", kernel_init=_RESIDUAL_INIT,
                                name="conv1")(h)
        h = nn.relu(common.batch_norm(train, self.axis_name, name="bn2")(h))
        h = _conv(self.features, 3, _RESIDUAL_INIT, "conv2")(h)
        shortcut = common.upsample_nearest(_conv(self.features, 1, _INIT, "shortcut")(x))
        return h + shortcut


class EnergyBlock(nn.Module):
    """Spectrally normalised residual block: (N, H, W, Cin) -> (N, H', W', features), with
    H' = H / 2 when downsample. `first` is the input block (no ReLU before its first conv,
    pooling before its shortcut conv)."""
    features: int
    downsample: bool
    first: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        def sn_conv(h, kernel, init, name, pool_after=False):
            if pool_after:  # downsample_mean(conv(h)) as one stride-2 conv (same values)
                conv = common.ResampleConv(self.features, kernel, "downsample_after",
                                           kernel_init=init, name=name)
            else:
                conv = _conv(self.features, kernel, init, name)
            return common.spectral_norm(conv, name=f"sn_{name}")(h, update_stats=train)

        h = x if self.first else nn.relu(x)
        h = sn_conv(h, 3, _RESIDUAL_INIT, "conv1")
        h = sn_conv(nn.relu(h), 3, _RESIDUAL_INIT, "conv2", pool_after=self.downsample)

        if self.first:
            shortcut = sn_conv(common.downsample_mean(x), 1, _INIT, "shortcut")
        elif self.downsample or x.shape[-1] != self.features:
            # A 1x1 conv commutes with mean pooling: pool first, 4x less work.
            shortcut = sn_conv(common.downsample_mean(x) if self.downsample else x, 1, _INIT,
                               "shortcut")
        else:
            shortcut = x
        return h + shortcut


class ResNetGenerator(nn.Module):
    """SN-ResNet generator (SNGAN).

    Attributes:
      image_size: output side S (32 or 64).
      channels: output channels C.
      width: channels of the residual blocks; None: the variant's own (default_widths: 256 as
        in the SNGAN paper, 128 in the authors' code).
      axis_name: device axis over which BatchNorm statistics are averaged (None: local batch).
      variant: 'ours' or 'authors' (authors.resnet_generator: identity shortcuts).
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 256, "authors": 128}  # width=None
    axis_name: Optional[str] = None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        """z (N, latent_dim) -> images (N, S, S, C) in [-1, 1]."""
        common.check_latent(type(self).__name__, z)
        width = authors.width(self)
        if self.variant == "authors":
            return authors.resnet_generator(z, train=train, image_size=self.image_size,
                                            channels=self.channels, width=width,
                                            axis_name=self.axis_name)
        features = _channels(width, 4)
        x = nn.Dense(4 * 4 * features, kernel_init=_INIT, name="dense")(z)
        x = x.reshape(z.shape[0], 4, 4, features)
        for i in range(common.num_stages(self.image_size)):
            resolution = 8 * 2 ** i
            x = GeneratorBlock(_channels(width, resolution), self.axis_name,
                               name=f"block{i}")(x, train=train)
        x = nn.relu(common.batch_norm(train, self.axis_name, name="bn_out")(x))
        x = _conv(self.channels, 3, _INIT, "out")(x)
        return jnp.tanh(x)


class ResNetEnergy(nn.Module):
    """SN-ResNet discriminator (SNGAN) as an energy; train=True runs one power iteration per
    layer and stores it ('batch_stats').

    Attributes:
      image_size: input side S (32 or 64).
      channels: input channels C.
      width: channels of the residual blocks; None: 128 (the paper's and the authors' code's).
      variant: 'ours' or 'authors' (authors.resnet_energy: the same layers, weights drawn as
        theirs, and the mean instead of the sum over the last 8x8 map).
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 128, "authors": 128}  # width=None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """x (N, S, S, C) -> energies (N,) float32."""
        common.check_images(type(self).__name__, x, self.image_size, self.channels)
        width = authors.width(self)
        if self.variant == "authors":
            return authors.resnet_energy(x, train=train, width=width)
        resolution = self.image_size
        x = EnergyBlock(_channels(width, resolution), downsample=True, first=True,
                        name="block0")(x, train=train)
        i = 1
        while resolution > 16:  # down to 8x8
            resolution //= 2
            x = EnergyBlock(_channels(width, resolution), downsample=True,
                            name=f"block{i}")(x, train=train)
            i += 1
        for _ in range(2):
            x = EnergyBlock(width, downsample=False, name=f"block{i}")(x, train=train)
            i += 1
        x = jnp.sum(nn.relu(x), axis=(1, 2))
        dense = nn.Dense(1, kernel_init=_INIT, name="out")
        x = common.spectral_norm(dense, name="sn_out")(x, update_stats=train)
        return x[:, 0].astype(jnp.float32)
