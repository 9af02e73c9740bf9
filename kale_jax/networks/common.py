"""Pieces shared by the network modules: argument checks, activations, resampling, BatchNorm.

Images are NHWC float32 throughout.

The convolutions (`ResampleConv` and the functions it calls) hold two kinds of rewrite, each
computing the plain lax form's values and gradients of every order up to float summation order:
* on every platform, the algorithmic ones: upsample-then-conv and conv-then-pool at the low
  resolution (2.25x fewer multiply-adds);
* on the CPU only, chosen when the program is lowered (`kale_jax.xla_cpu.on_cpu`), the XLA:CPU
  work-arounds: custom VJPs with dense adjoint-kernel input gradients and kernel gradients
  (XLA's own kernel-gradient convs for the SAME and stride-2 convs, im2col matmuls for the VALID
  ones), space-to-depth stride-2 gradients, sub-pixel transposed convs. On GPU and TPU the
  plain lax forms and XLA's own gradients run instead (the im2col patches, k*k times an
  activation, would be pure memory traffic there). docs/performance.md gives the reasons.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax import checks, xla_cpu

Array = jax.Array

# Image sizes the convolutional networks are built for: 32 -> 3 up/down stages, 64 -> 4.
IMAGE_SIZES = (32, 64)
# The DCGAN pair also builds 16x16 (2 stages; small procedural sets such as 'shapes').
DCGAN_IMAGE_SIZES = (16,) + IMAGE_SIZES
# x2 resampling stages between 4x4 and S x S: S = 4 * 2^stages.
NUM_STAGES = {16: 2, 32: 3, 64: 4}

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
    """Raises ConfigError (a ValueError) unless image_size is one of `allowed`."""
    checks.check_choice(image_size, f"{owner}.image_size", tuple(allowed))


def check_positive(owner: str, name: str, value: int) -> None:
    """Raises ConfigError (a ValueError) unless value is an integer >= 1."""
    checks.check_int(value, f"{owner}.{name}", minimum=1)


def check_depth(owner: str, value: int) -> None:
    """Raises ConfigError (a ValueError) unless the hidden-layer count is an integer >= 0."""
    checks.check_int(value, f"{owner}.depth", minimum=0, fix="depth is the number of hidden layers")


def get_activation(owner: str, name: str, value: Optional[str],
                   allow_none: bool = False) -> Callable[[Array], Array]:
    """The activation function called `value` (identity for None when allow_none)."""
    if value is None and allow_none:
        return lambda x: x
    allowed = tuple(sorted(ACTIVATIONS)) + ((None,) if allow_none else ())
    checks.check_choice(value, f"{owner}.{name}", allowed)
    return ACTIVATIONS[value]


def num_stages(image_size: int) -> int:
    """Number of x2 resampling stages between 4x4 and image_size x image_size (16 -> 2,
    32 -> 3, 64 -> 4)."""
    return NUM_STAGES[image_size]


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
    return SpectralNorm(layer, n_steps=1, name=name)


class SpectralNorm(nn.SpectralNorm):
    """nn.SpectralNorm whose normalised kernel keeps the dtype of the stored kernel as the layer
    reads it. The power iteration runs in float32 (u and sigma are float32 'batch_stats'), which
    would otherwise promote a bfloat16 kernel (networks.precision) to float32 and with it the
    layer's matmul; in float32 this changes nothing. (Same class name as flax's, so an unnamed
    instance gets flax's automatic name, SpectralNorm_<i>.)"""

    def _spectral_normalize(self, path, vs, update_stats):
        normalised = super()._spectral_normalize(path, vs, update_stats)
        return normalised.astype(jnp.asarray(vs).dtype)


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


# ------------------------------------------------------------------------------------------------
# Convolutions without wasted work.
#
# Two kinds of rewrite live here (docs/performance.md, "Convolutions: which rewrite runs where").
#
# Algorithmic, on every platform: "nearest x2 upsampling, then a 3x3 conv" and "a 3x3 conv, then
# 2x2 mean pooling" spend 2.25x the useful multiply-adds at the high resolution; upsample_conv3x3
# and conv3x3_downsample compute the same maps at the low resolution:
#   * upsampling ops = four 2x2 "phase" convs on the input padded by one, interleaved
#     (depth-to-space), phase (a, b) computing the output pixels (2p + a, 2q + b);
#   * conv-then-pool = one 4x4 stride-2 conv with the pooled kernel.
#
# XLA:CPU work-arounds, on the CPU only (kale_jax.xla_cpu.on_cpu picks them when the program is
# lowered for the CPU; every other platform gets the plain lax form and XLA's own gradients,
# which cuDNN and the TPU compiler run well and which write no im2col patches):
#   * every conv has a custom VJP: input gradients as dense convs with the adjoint kernel; kernel
#     gradients as XLA's own kernel-gradient convs for the SAME and stride-2 convs (XLA:CPU runs
#     those 2-2.5x faster than im2col), as im2col matmuls for the VALID convs (their XLA
#     kernel-gradient convs run 4x to 40x slower than im2col);
#   * stride-2 conv gradients from the same map written as a (k/2 x k/2) VALID conv on the
#     space-to-depth of the padded input (XLA convolves a zero-dilated output gradient);
#   * stride-2 transposed convs as a sub-pixel conv (XLA convolves a zero-dilated input).
# Kernels are (kh, kw, in, out) (HWIO, flax's layout); images NHWC with even sides.
# ------------------------------------------------------------------------------------------------

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: Array, kernel: Array, padding) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


def _conv_valid_plain(x: Array, kernel: Array) -> Array:
    return _conv(x, kernel, "VALID")


def _conv_same_plain(x: Array, kernel: Array) -> Array:
    return _conv(x, kernel, "SAME")


def _conv_stride2_plain(x: Array, kernel: Array) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DIMENSIONS)


def _conv_transpose_stride2_plain(x: Array, kernel: Array) -> Array:
    return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DIMENSIONS)


# --- The XLA:CPU forms (custom VJPs). They call each other, never the dispatched functions. ---

def _adjoint_kernel(kernel: Array) -> Array:
    """The kernel of a conv's input gradient: spatially flipped, in/out features swapped."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _kernel_grad(x: Array, g: Array, kh: int, kw: int) -> Array:
    """d(sum g * VALID conv(x, K)) / dK as one matmul of image patches (im2col) with g: x
    (N, Ho + kh - 1, Wo + kw - 1, Cin), g (N, Ho, Wo, Cout) -> (kh, kw, Cin, Cout). For the VALID
    convs, whose kernel-gradient convs XLA:CPU runs on a slow path (docs/performance.md)."""
    n, ho, wo, cout = g.shape
    cin = x.shape[-1]
    patches = jnp.stack([x[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], axis=3)
    grad = patches.reshape(n * ho * wo, kh * kw * cin).T @ g.reshape(n * ho * wo, cout)
    return grad.reshape(kh, kw, cin, cout)


def _xla_kernel_grad(conv: Callable[[Array, Array], Array], x: Array, kernel: Array,
                     g: Array) -> Array:
    """d(sum g * conv(x, K)) / dK as XLA's own kernel-gradient conv (jax's transpose rule).

    Args:
      conv: the plain conv (x, K) -> y, padding inside the conv ('SAME' or strided).
      x, kernel, g: its input, kernel and the output gradient.
    Returns:
      The kernel gradient, of the kernel's shape. XLA:CPU runs it 2-2.5x faster than im2col
      for the SAME 3x3 and stride-2 4x4 convs (docs/performance.md, "Kernel gradients")."""
    return jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0]


@jax.custom_vjp
def _conv_valid_cpu(x: Array, kernel: Array) -> Array:
    """VALID stride-1 conv whose gradients (of any order) are dense convs and matmuls."""
    return _conv(x, kernel, "VALID")


def _conv_valid_fwd(x, kernel):
    return _conv_valid_cpu(x, kernel), (x, kernel)


def _conv_valid_bwd(residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    return _conv_valid_cpu(padded, _adjoint_kernel(kernel)), _kernel_grad(x, g, kh, kw)


_conv_valid_cpu.defvjp(_conv_valid_fwd, _conv_valid_bwd)


@jax.custom_vjp
def _conv_same_cpu(x: Array, kernel: Array) -> Array:
    """SAME stride-1 conv (odd kernel) whose input gradients of every order are dense SAME convs
    with the adjoint kernel; kernel gradients XLA's own (a SAME kernel-gradient conv)."""
    return _conv(x, kernel, "SAME")


def _conv_same_fwd(x, kernel):
    return _conv_same_cpu(x, kernel), (x, kernel)


def _conv_same_bwd(residuals, g):
    x, kernel = residuals
    return _conv_same_cpu(g, _adjoint_kernel(kernel)), _xla_kernel_grad(_conv_same_plain, x,
                                                                         kernel, g)


_conv_same_cpu.defvjp(_conv_same_fwd, _conv_same_bwd)


def space_to_depth(x: Array) -> Array:
    """(N, 2H, 2W, C) -> (N, H, W, 4C); channel index (di * 2 + dj) * C + c for pixel
    (2h + di, 2w + dj)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // 2, w // 2, 4 * c)


def _conv_stride2_dense(x: Array, kernel: Array) -> Array:
    """The stride-2 SAME conv as a stride-1 conv on the space-to-depth image: an output pixel p
    reads inputs 2p + t - (k/2 - 1), t < k, one block window of the padded input."""
    k = kernel.shape[0]
    pad = k // 2 - 1  # SAME pads k - 2 in total, evenly for even H
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cin, cout = kernel.shape[2:]
    blocks = kernel.reshape(k // 2, 2, k // 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return _conv_valid_cpu(space_to_depth(x), blocks.reshape(k // 2, k // 2, 4 * cin, cout))


@jax.custom_vjp
def _conv_stride2_cpu(x: Array, kernel: Array) -> Array:
    """XLA's strided forward conv (XLA:CPU runs it well) with the input gradient of
    _conv_stride2_dense: dense stride-1 convs instead of XLA's convs over a zero-dilated output
    gradient (measured on the SNGAN energy's first stride-2 conv at batch 64: input gradient
    116 -> 40 ms CPU); the kernel gradient is XLA's own strided one (2x faster than im2col of
    the space-to-depth form, docs/performance.md)."""
    return _conv_stride2_plain(x, kernel)


def _conv_stride2_fwd(x, kernel):
    return _conv_stride2_cpu(x, kernel), (x, kernel)


def _conv_stride2_bwd(residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda v: _conv_stride2_dense(v, kernel), x)[1](g)[0]
    return dx, _xla_kernel_grad(_conv_stride2_plain, x, kernel, g)


_conv_stride2_cpu.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)


def _interleave(phases) -> Array:
    """phases[a][b] (N, H, W, C) -> (N, 2H, 2W, C) with pixel (2p + a, 2q + b) from phases[a][b]."""
    rows = [jnp.stack(row, axis=3) for row in phases]        # each (N, H, W, 2, C)
    y = jnp.stack(rows, axis=2)                              # (N, H, 2, W, 2, C)
    n, h, _, w, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * w, c)


def _phase_convs(x: Array, taps, conv_valid: Callable[[Array, Array], Array]) -> Array:
    """Sub-pixel convolution. Output phase (a, b) (pixels (2p + a, 2q + b)) is a 2x2 conv of the
    input padded by one, window starting at (p + a, q + b), with the 2x2 kernel
    [taps(a, b, i, j)]_{i, j}. All four phases run as ONE 2x2 VALID conv (`conv_valid`) with 4x
    the output channels over the padded input ((H + 1) x (W + 1) outputs), phase (a, b) then
    being the window offset (a, b) of its channel block; one large conv runs faster on XLA:CPU
    than four small ones, for (H + 1)(W + 1) / (HW) of the useful work."""
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    kernel = jnp.stack([jnp.stack([jnp.concatenate([taps(a, b, i, j) for a in range(2)
                                                    for b in range(2)], axis=-1)
                                   for j in range(2)]) for i in range(2)])
    out = conv_valid(xp, kernel)  # (N, H + 1, W + 1, 4 Cout), phase blocks in (a, b) order
    cout = out.shape[-1] // 4
    phases = [[out[:, a:a + h, b:b + w, (2 * a + b) * cout:(2 * a + b + 1) * cout]
               for b in range(2)] for a in range(2)]
    return _interleave(phases)


def _subpixel_transpose(x, kernel):
    """lax.conv_transpose(x, kernel, (2, 2), 'SAME') of a 4x4 kernel as a sub-pixel conv: output
    pixel 2p + a reads inputs p - 1 + a with kernel index a and p + a with index a + 2."""
    return _phase_convs(x, lambda a, b, i, j: kernel[a + 2 * i, b + 2 * j], _conv_valid_cpu)


@jax.custom_vjp
def _conv_transpose_stride2_cpu(x: Array, kernel: Array) -> Array:
    """Forward: the sub-pixel conv instead of XLA's conv over the zero-dilated input. Gradients:
    those of lax.conv_transpose (input: XLA's dense strided conv) and of the sub-pixel form
    (kernel). (Measured per layer of the SNGAN generator at batch 64, CPU ms: forward
    118/111/132 -> 108/73/65; the sub-pixel form's own input gradient was slower than the strided
    conv, 151/103/92 vs 112/87/80.)"""
    return _subpixel_transpose(x, kernel)


def _conv_transpose_stride2_fwd(x, kernel):
    return _conv_transpose_stride2_cpu(x, kernel), (x, kernel)


def _conv_transpose_stride2_bwd(residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda v: _conv_transpose_stride2_plain(v, kernel), x)[1](g)[0]
    dk = jax.vjp(lambda k: _subpixel_transpose(x, k), kernel)[1](g)[0]
    return dx, dk


_conv_transpose_stride2_cpu.defvjp(_conv_transpose_stride2_fwd, _conv_transpose_stride2_bwd)


# --- The dispatched functions: the CPU form on the CPU, the plain form elsewhere. ---

_conv_valid = xla_cpu.on_cpu(_conv_valid_cpu, _conv_valid_plain)
_conv_same = xla_cpu.on_cpu(_conv_same_cpu, _conv_same_plain)
_conv_stride2 = xla_cpu.on_cpu(_conv_stride2_cpu, _conv_stride2_plain)
_conv_transpose_stride2 = xla_cpu.on_cpu(_conv_transpose_stride2_cpu,
                                         _conv_transpose_stride2_plain)


def conv_same(x: Array, kernel: Array) -> Array:
    """Equals lax.conv_general_dilated(x, kernel, (1, 1), 'SAME') (NHWC, HWIO) for an odd k x k
    kernel: (N, H, W, Cin) -> (N, H, W, Cout). On the CPU its input gradients of every order are
    dense SAME convs with the adjoint kernel, its kernel gradient XLA's own; elsewhere it is that
    lax conv with XLA's gradients."""
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"conv_same needs an odd kernel; got {kernel.shape}")
    return _conv_same(x, kernel)


def conv_stride2(x: Array, kernel: Array) -> Array:
    """Equals lax.conv_general_dilated(x, kernel, (2, 2), 'SAME') (NHWC, HWIO) for an even
    k x k kernel and even H, W: (N, H, W, Cin) -> (N, H/2, W/2, Cout).

    The forward pass is that strided conv everywhere. On the CPU its input gradient is that of
    the same map written as a (k/2 x k/2) VALID conv on the space-to-depth of the padded input,
    dense stride-1 convs instead of XLA's convs over a zero-dilated output gradient, and its
    kernel gradient XLA's own; elsewhere XLA's gradients."""
    k = kernel.shape[0]
    if kernel.shape[0] != kernel.shape[1] or k % 2 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"conv_stride2 needs an even square kernel and even sides; got kernel "
                         f"{kernel.shape}, input {x.shape}")
    return _conv_stride2(x, kernel)


def conv_transpose_stride2(x: Array, kernel: Array) -> Array:
    """Equals lax.conv_transpose(x, kernel, (2, 2), 'SAME') (NHWC, HWIO, transpose_kernel=False:
    what flax.linen.ConvTranspose computes) for a 4x4 kernel: (N, H, W, Cin) -> (N, 2H, 2W, Cout).

    On the CPU the forward pass is a sub-pixel conv (no zero-dilated input) and the gradients are
    those of lax.conv_transpose (input) and of the sub-pixel form (kernel); elsewhere it is
    lax.conv_transpose with XLA's gradients (cuDNN runs it as a backward-data conv)."""
    if kernel.shape[:2] != (4, 4):
        raise ValueError(f"conv_transpose_stride2 needs a 4x4 kernel; got {kernel.shape}")
    return _conv_transpose_stride2(x, kernel)


def upsample_conv3x3(x: Array, kernel: Array) -> Array:
    """Equals the 3x3 SAME conv of upsample_nearest(x): (N, H, W, Cin) -> (N, 2H, 2W, Cout), at
    the low resolution on every platform (4 instead of 9 multiply-adds per output pixel).

    Along an axis, output 2p reads inputs (p - 1, p) with kernel rows (0, 1 + 2) and output
    2p + 1 reads (p, p + 1) with rows (0 + 1, 2)."""
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"upsample_conv3x3 needs a 3x3 kernel; got {kernel.shape}")
    groups = (((0,), (1, 2)), ((0, 1), (2,)))  # groups[phase][tap] = summed kernel indices

    def taps(a, b, i, j):
        return sum(kernel[r, c] for r in groups[a][i] for c in groups[b][j])

    return _phase_convs(x, taps, _conv_valid)


def conv3x3_downsample(x: Array, kernel: Array) -> Array:
    """Equals downsample_mean(3x3 SAME conv of x): (N, H, W, Cin) -> (N, H/2, W/2, Cout), at the
    low resolution on every platform (16 instead of 36 multiply-adds per output pixel).

    Mean pooling after the conv is a 4x4 stride-2 conv with the kernel K'[s] = (K[s] + K[s-1]) / 2
    per axis (K[-1] = K[3] = 0), padded like SAME."""
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"conv3x3_downsample needs a 3x3 kernel; got {kernel.shape}")
    k = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    k = k + jnp.roll(k, 1, axis=0)
    k = k + jnp.roll(k, 1, axis=1)
    return conv_stride2(x, 0.25 * k)


RESAMPLINGS = ("none", "stride2", "transpose2", "upsample_before", "downsample_after")


class ResampleConv(nn.Module):
    """A k x k SAME convolution fused with x2 resampling, with nn.Conv's parameters ('kernel'
    (k, k, in, features), then 'bias' (features,), same initialisers and creation order), so it
    replaces nn.Conv / nn.ConvTranspose (and works under nn.SpectralNorm) without changing any
    parameter, name or value:

      'none':             nn.Conv(padding='SAME'), odd k                 (H -> H)
      'stride2':          nn.Conv(strides=2, padding='SAME'), even k     (H -> H/2)
      'transpose2':       nn.ConvTranspose(strides=2, padding='SAME'), k=4 (H -> 2H)
      'upsample_before':  nn.Conv(k=3) applied to upsample_nearest(x)     (H -> 2H)
      'downsample_after': downsample_mean(nn.Conv(k=3)(x))                (H -> H/2)
    """
    features: int
    kernel_size: int
    resampling: str
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        fn = {"none": conv_same, "stride2": conv_stride2, "transpose2": conv_transpose_stride2,
              "upsample_before": upsample_conv3x3,
              "downsample_after": conv3x3_downsample}[self.resampling]
        y = fn(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y
