"""Pieces shared by the network modules: argument checks, activations, resampling, BatchNorm.

Images are NHWC float32 throughout.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Image sizes the convolutional networks are built for: 32 -> 3 up/down stages, 64 -> 4.
IMAGE_SIZES = (32, 64)

# BatchNorm running-average momentum (new = momentum * old + (1 - momentum) * batch).
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5

ACTIVATIONS = {
    "relu": nn.relu,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "elu": nn.elu,
    "softplus": nn.softplus,
    "swish": nn.swish,
    "tanh": jnp.tanh,
}


def check_image_size(owner: str, image_size: int, allowed: Sequence[int] = IMAGE_SIZES) -> None:
    """Raises ValueError unless image_size is one of `allowed`."""
    if image_size not in allowed:
        raise ValueError(f"{owner}: image_size={image_size!r} is not supported; "
                         f"allowed sizes are {tuple(allowed)}")


def check_positive(owner: str, name: str, value: int) -> None:
    """Raises ValueError unless value is a positive int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name}={value!r} must be a positive integer")


def get_activation(owner: str, name: str, value: Optional[str],
                   allow_none: bool = False) -> Callable[[Array], Array]:
    """The activation function called `value` (identity for None when allow_none)."""
    if value is None and allow_none:
        return lambda x: x
    if value not in ACTIVATIONS:
        allowed = sorted(ACTIVATIONS) + (["None"] if allow_none else [])
        raise ValueError(f"{owner}: {name}={value!r} is not supported; allowed: {allowed}")
    return ACTIVATIONS[value]


def num_stages(image_size: int) -> int:
    """Number of x2 resampling stages between 4x4 and image_size x image_size (32 -> 3)."""
    return {32: 3, 64: 4}[image_size]


def check_latent(owner: str, z: Array) -> None:
    """Raises ValueError unless z has shape (N, latent_dim)."""
    if z.ndim != 2:
        raise ValueError(f"{owner}: latents must have shape (N, latent_dim); got {z.shape}")


def check_images(owner: str, x: Array, image_size: int, channels: int) -> None:
    """Raises ValueError unless x has shape (N, image_size, image_size, channels)."""
    if x.ndim != 4 or x.shape[1:] != (image_size, image_size, channels):
        raise ValueError(f"{owner}: inputs must have shape (N, {image_size}, {image_size}, "
                         f"{channels}) (NHWC, from image_size and channels); got {x.shape}")


def batch_norm(train: bool, axis_name: Optional[str], name: Optional[str] = None) -> nn.BatchNorm:
    """BatchNorm over all but the channel axis; batch statistics pmean-ed over `axis_name`."""
    return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM,
                        epsilon=BATCH_NORM_EPSILON, axis_name=axis_name, name=name)


def upsample_nearest(x: Array) -> Array:
    """(N, H, W, C) -> (N, 2H, 2W, C), each pixel repeated in a 2x2 block."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


def downsample_mean(x: Array) -> Array:
    """(N, H, W, C) -> (N, H/2, W/2, C), the mean of each 2x2 block (average pooling)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def spectral_norm(layer: nn.Module, name: Optional[str] = None) -> nn.SpectralNorm:
    """Wraps a layer so its kernel is divided by its top singular value (one power iteration a
    call; the power-iteration vector u and the estimate sigma live in 'batch_stats').

    flax.linen.SpectralNorm stores the *normalised* kernel W0 / sigma0 at init (sigma0: one
    power iteration from the random u), so the initialised params have top singular value
    s1(W0) / sigma0 >= 1 whatever the kernel initialiser's scale; sigma starts at 1 and the
    first train-mode call estimates it as exactly 1 again (same u, same kernel)."""
    return nn.SpectralNorm(layer, n_steps=1, name=name)


# Weight initialisers. They draw a flat vector and reshape it: XLA:CPU (jax 0.10) compiles a
# threefry draw of a 4-D shape about ten times slower than a 1-D draw of the same size (a
# 3-layer conv net's jitted init took 27 s to compile with flax's initialisers, 2-4 s with these).
# The distributions are the usual ones; only the order of the draws differs.

def _fans(shape: Tuple[int, ...]) -> Tuple[float, float]:
    """(fan_in, fan_out) of a dense (in, out) or conv (..., in, out) kernel, as flax counts them."""
    if len(shape) < 2:
        raise ValueError(f"fans are defined for kernels of rank >= 2; got shape {shape}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def normal_init(stddev: float) -> Callable:
    """Initialiser drawing i.i.d. N(0, stddev^2) entries."""
    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
    return init


def uniform_variance_scaling(scale: float, mode: str) -> Callable:
    """Initialiser drawing U(-l, l) with variance scale / fan, fan from `mode` ('fan_in',
    'fan_out' or 'fan_avg'). scale=1, 'fan_avg' is Glorot (Xavier) uniform; scale=1, 'fan_in'
    is LeCun uniform."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"mode={mode!r}; allowed: 'fan_in', 'fan_out', 'fan_avg'")

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        limit = math.sqrt(3.0 * scale / fan)
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, -limit, limit)
        return flat.reshape(shape)
    return init
