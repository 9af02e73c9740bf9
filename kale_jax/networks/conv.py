"""Plain convolutional generators and energies: DCGAN (Radford et al. 2016) and the "standard
CNN" of SNGAN (Miyato et al. 2018, Table 3).

Shapes: latents z (N, latent_dim) -> images (N, S, S, C) in [-1, 1]; images (N, S, S, C) ->
energies (N,) float32. S is image_size: 32 or 64 (64 adds one x2 stage), and 16 for the DCGAN
pair (one stage fewer than 32: 4 -> 8 -> 16); layouts are NHWC.

Channel schedules (w = width), for S = 32 / 64 (DCGAN at 16: 4x4x2w -> 8x8xw -> 16x16xC, and
16x16xC -> 8x8xw -> 4x4x2w -> dense):
  DCGAN generator  4x4x4w -> ... -> SxSxC      /  4x4x8w -> ...      (last hidden layer has w)
  DCGAN energy     S/2 x S/2 x w -> ... -> 4x4x4w  /  ... -> 4x4x8w, then dense to 1
  SNGAN generator  4x4x8w -> 8w/2 -> ... -> w, 3x3 conv to C   /  4x4x16w -> ...
  SNGAN energy     (3x3 c, 4x4 stride-2 c) for c = w, 2w, 4w [, 8w], then 3x3 8w [16w], dense
The paper defaults (S = 32) are w = 64: SNGAN's generator starts at 4x4x512, its energy ends
with 512 channels. Layers followed by BatchNorm carry no bias (BatchNorm's shift replaces it).

Energies have no normalisation that couples examples of a batch: E(x_i) depends on x_i alone,
as KALE's per-example expectations and the gradient penalty require. (The exception is
variant='authors' of DCGANEnergy, whose BatchNorm uses batch statistics in training mode, as the
authors' code does.)

Each class has a `variant`: 'ours' (the layouts above) or 'authors' (the networks of the
authors' GEBM code, kale_jax/networks/authors.py; docs/design.md, "Networks", says what differs).
"""
from __future__ import annotations

from typing import ClassVar, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax.networks import authors, common

Array = jax.Array

# DCGAN and SNGAN both initialise weights from N(0, 0.02^2).
_INIT = common.normal_init(0.02)


def _check(module: nn.Module) -> None:
    owner = type(module).__name__
    common.check_image_size(owner, module.image_size, module.image_sizes)
    authors.check(owner, module.variant, module.image_size)
    common.check_positive(owner, "channels", module.channels)
    if module.width is not None:
        common.check_positive(owner, "width", module.width)


def _up_conv(features: int, use_bias: bool, name: str) -> nn.Module:
    """4x4 stride-2 transposed conv: (N, H, W, C) -> (N, 2H, 2W, features); the parameters and
    outputs of nn.ConvTranspose(features, (4, 4), strides=2, padding='SAME'), computed without
    XLA's zero-dilated input (common.ResampleConv)."""
    return common.ResampleConv(features, 4, "transpose2", use_bias=use_bias, kernel_init=_INIT,
                               name=name)


def _down_conv(features: int, kernel: int, name: str) -> nn.Module:
    """k x k stride-2 SAME conv with bias: (N, H, W, C) -> (N, H/2, W/2, features); nn.Conv's
    parameters and outputs, computed as a stride-1 conv (common.ResampleConv) so that its
    input-gradient is dense too."""
    return common.ResampleConv(features, kernel, "stride2", kernel_init=_INIT, name=name)


class DCGANGenerator(nn.Module):
    """DCGAN generator: dense -> 4x4 -> 4x4 stride-2 transposed convs (BatchNorm, ReLU) -> tanh.

    variant='authors' is the authors' PyTorch DCGAN (authors.dcgan_generator: 4x4x8w at every
    size, a 1x1 output conv at 32x32; 3.57M parameters at 32x32 against ours' 1.07M).

    Attributes:
      image_size: output side S (16, 32 or 64; 32 or 64 for variant='authors').
      channels: output channels C.
      width: channels of the last hidden layer (None: 64); the 4x4 layer has width * S / 8
        ('ours').
      axis_name: device axis over which BatchNorm statistics are averaged (None: local batch).
      variant: 'ours' or 'authors' (docs/design.md, "Networks").
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.DCGAN_IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 64, "authors": 64}  # width=None
    axis_name: Optional[str] = None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        """z (N, latent_dim) -> images (N, S, S, C) in [-1, 1]."""
        common.check_latent(type(self).__name__, z)
        if self.variant == "authors":
            return authors.dcgan_generator(z, train=train, image_size=self.image_size,
                                           channels=self.channels, width=authors.width(self),
                                           axis_name=self.axis_name)
        n_up = common.num_stages(self.image_size)
        features = authors.width(self) * 2 ** (n_up - 1)
        x = nn.Dense(4 * 4 * features, use_bias=False, kernel_init=_INIT, name="dense")(z)
        x = x.reshape(z.shape[0], 4, 4, features)
        x = nn.relu(common.batch_norm(train, self.axis_name, name="bn_dense")(x))
        for i in range(n_up - 1):
            features //= 2
            x = _up_conv(features, use_bias=False, name=f"up{i}")(x)
            x = nn.relu(common.batch_norm(train, self.axis_name, name=f"bn_up{i}")(x))
        x = _up_conv(self.channels, use_bias=True, name=f"up{n_up - 1}")(x)
        return jnp.tanh(x)


class DCGANEnergy(nn.Module):
    """DCGAN discriminator as an energy: 4x4 stride-2 convs with LeakyReLU(0.2), no
    normalisation, dense to a scalar.

    variant='authors' is the authors' PyTorch DCGAN discriminator (authors.dcgan_energy): four
    convs at every size, BatchNorm (batch statistics when train=True, so a training-mode energy
    couples the examples of a batch) and a sigmoid output in (0, 1).

    Attributes:
      image_size: input side S (16, 32 or 64; 32 or 64 for variant='authors').
      channels: input channels C.
      width: channels of the first conv (None: 64); each stride-2 conv doubles them.
      axis_name: device axis over which BatchNorm statistics are averaged ('authors' only).
      variant: 'ours' or 'authors' (docs/design.md, "Networks").
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.DCGAN_IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 64, "authors": 64}  # width=None
    axis_name: Optional[str] = None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """x (N, S, S, C) -> energies (N,) float32. `train` is unused by 'ours' (no state)."""
        common.check_images(type(self).__name__, x, self.image_size, self.channels)
        if self.variant == "authors":
            return authors.dcgan_energy(x, train=train, width=authors.width(self),
                                        axis_name=self.axis_name)
        for i in range(common.num_stages(self.image_size)):
            x = _down_conv(authors.width(self) * 2 ** i, 4, name=f"down{i}")(x)
            x = nn.leaky_relu(x, 0.2)
        x = nn.Dense(1, kernel_init=_INIT, name="out")(x.reshape(x.shape[0], -1))
        return x[:, 0].astype(jnp.float32)


class SNGANGenerator(nn.Module):
    """SNGAN standard-CNN generator: dense to 4x4 x (width * S / 4), 4x4 stride-2 transposed
    convs halving the channels (BatchNorm, ReLU), 3x3 conv to C, tanh.

    Attributes:
      image_size: output side S (32 or 64).
      channels: output channels C.
      width: channels at full resolution before the output conv (None: 64, as the paper).
      axis_name: device axis over which BatchNorm statistics are averaged (None: local batch).
      variant: 'ours' or 'authors' (authors.sngan_generator: biases before BatchNorm, three
        up-stages from S/8 at every size; docs/design.md, "Networks").
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 64, "authors": 64}  # width=None
    axis_name: Optional[str] = None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        """z (N, latent_dim) -> images (N, S, S, C) in [-1, 1]."""
        common.check_latent(type(self).__name__, z)
        if self.variant == "authors":
            return authors.sngan_generator(z, train=train, image_size=self.image_size,
                                           channels=self.channels, width=authors.width(self),
                                           axis_name=self.axis_name)
        n_up = common.num_stages(self.image_size)
        features = authors.width(self) * 2 ** n_up
        x = nn.Dense(4 * 4 * features, use_bias=False, kernel_init=_INIT, name="dense")(z)
        x = x.reshape(z.shape[0], 4, 4, features)
        x = nn.relu(common.batch_norm(train, self.axis_name, name="bn_dense")(x))
        for i in range(n_up):
            features //= 2
            x = _up_conv(features, use_bias=False, name=f"up{i}")(x)
            x = nn.relu(common.batch_norm(train, self.axis_name, name=f"bn_up{i}")(x))
        x = common.ResampleConv(self.channels, 3, "none", kernel_init=_INIT, name="out")(x)
        return jnp.tanh(x)


class SNGANEnergy(nn.Module):
    """SNGAN standard-CNN discriminator as an energy; every layer spectrally normalised.

    Per stage: 3x3 conv (c), LeakyReLU(0.1), 4x4 stride-2 conv (c), LeakyReLU(0.1), with
    c = width, 2 width, ...; then a 3x3 conv with twice the last c, LeakyReLU(0.1), dense to 1.
    train=True runs one power iteration per layer and stores it ('batch_stats').

    Attributes:
      image_size: input side S (32 or 64).
      channels: input channels C.
      width: channels of the first stage (None: 64, as the paper).
      variant: 'ours' or 'authors' (authors.sngan_energy: channels doubled in the stride-2
        convs, 5.86M parameters at 32x32 against ours' 2.94M, and a dense layer without
        spectral norm; docs/design.md, "Networks").
    """
    image_size: int = 32
    input_kind: ClassVar[str] = "image"  # NHWC images (networks.input_kind)
    image_sizes: ClassVar[Tuple[int, ...]] = common.IMAGE_SIZES
    channels: int = 3
    width: Optional[int] = None
    default_widths: ClassVar[Dict[str, int]] = {"ours": 64, "authors": 64}  # width=None
    variant: str = "ours"

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """x (N, S, S, C) -> energies (N,) float32."""
        common.check_images(type(self).__name__, x, self.image_size, self.channels)
        if self.variant == "authors":
            return authors.sngan_energy(x, train=train, width=authors.width(self))

        def sn_conv(h, features, kernel, stride, name):
            if stride == 2:
                conv = _down_conv(features, kernel, name)
            else:
                conv = common.ResampleConv(features, kernel, "none", kernel_init=_INIT,
                                           name=name)
            h = common.spectral_norm(conv, name=f"sn_{name}")(h, update_stats=train)
            return nn.leaky_relu(h, 0.1)

        n_down = common.num_stages(self.image_size)
        for i in range(n_down):
            features = authors.width(self) * 2 ** i
            x = sn_conv(x, features, 3, 1, f"conv{i}")
            x = sn_conv(x, features, 4, 2, f"down{i}")
        x = sn_conv(x, authors.width(self) * 2 ** n_down, 3, 1, "conv_top")
        dense = nn.Dense(1, kernel_init=_INIT, name="out")
        x = x.reshape(x.shape[0], -1)
        x = common.spectral_norm(dense, name="sn_out")(x, update_stats=train)
        return x[:, 0].astype(jnp.float32)
