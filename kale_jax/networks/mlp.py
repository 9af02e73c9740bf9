"""Fully connected generator and energy for toy and tabular vectors.

Shapes: latents z (N, latent_dim) -> samples (N, output_dim); vectors (N, D) -> energies (N,).
"""
from __future__ import annotations

from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from kale_jax.networks import common

Array = jax.Array

# LeCun uniform (variance 1 / fan_in), drawn flat (see common.py).
_INIT = common.uniform_variance_scaling(1.0, "fan_in")


def _check(module: nn.Module) -> None:
    owner = type(module).__name__
    common.check_positive(owner, "hidden", module.hidden)
    common.check_depth(owner, module.depth)
    common.get_activation(owner, "activation", module.activation)


class MLPGenerator(nn.Module):
    """depth hidden layers of `hidden` units (Dense [-> BatchNorm] -> activation), then a dense
    layer to output_dim, then output_activation (None: unbounded outputs).

    Attributes:
      output_dim: dimension of the generated vectors.
      hidden: units per hidden layer.
      depth: number of hidden layers (0: a linear map).
      activation: hidden activation, one of common.ACTIVATIONS.
      batch_norm: BatchNorm after each hidden dense layer.
      output_activation: None or one of common.ACTIVATIONS (e.g. 'tanh' for data in [-1, 1]).
      axis_name: device axis over which BatchNorm statistics are averaged (None: local batch).
    """
    output_dim: int = 2
    hidden: int = 256
    depth: int = 2
    activation: str = "relu"
    batch_norm: bool = False
    output_activation: Optional[str] = None
    axis_name: Optional[str] = None
    input_kind: ClassVar[str] = "vector"  # generators: outputs vectors (networks.input_kind)

    def __post_init__(self):
        _check(self)
        common.check_positive(type(self).__name__, "output_dim", self.output_dim)
        common.get_activation(type(self).__name__, "output_activation", self.output_activation,
                              allow_none=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        """z (N, latent_dim) -> (N, output_dim)."""
        owner = type(self).__name__
        common.check_latent(owner, z)
        act = common.get_activation(owner, "activation", self.activation)
        x = z
        for i in range(self.depth):
            x = nn.Dense(self.hidden, use_bias=not self.batch_norm, kernel_init=_INIT,
                         name=f"dense{i}")(x)
            if self.batch_norm:
                x = common.batch_norm(train, self.axis_name, name=f"bn{i}")(x)
            x = act(x)
        x = nn.Dense(self.output_dim, kernel_init=_INIT, name="out")(x)
        return common.get_activation(owner, "output_activation", self.output_activation,
                                     allow_none=True)(x)


class MLPEnergy(nn.Module):
    """depth hidden layers of `hidden` units (Dense -> activation), then a dense layer to 1.
    Inputs with more than one feature axis are flattened.

    Attributes:
      hidden: units per hidden layer.
      depth: number of hidden layers (0: a linear energy).
      activation: hidden activation, one of common.ACTIVATIONS.
      spectral_norm: spectrally normalise every dense layer (state in 'batch_stats').
    """
    hidden: int = 256
    depth: int = 2
    activation: str = "leaky_relu"
    spectral_norm: bool = False
    input_kind: ClassVar[str] = "vector"  # takes (N, D) vectors (networks.input_kind)

    def __post_init__(self):
        _check(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """x (N, D) -> energies (N,) float32."""
        owner = type(self).__name__
        if x.ndim < 2:
            raise ValueError(f"{owner}: inputs must have shape (N, D); got {x.shape}")
        act = common.get_activation(owner, "activation", self.activation)

        def dense(h, features, name):
            layer = nn.Dense(features, kernel_init=_INIT, name=name)
            if self.spectral_norm:
                return common.spectral_norm(layer, name=f"sn_{name}")(h, update_stats=train)
            return layer(h)

        x = x.reshape(x.shape[0], -1)
        for i in range(self.depth):
            x = act(dense(x, self.hidden, f"dense{i}"))
        return dense(x, 1, "out")[:, 0].astype(jnp.float32)
