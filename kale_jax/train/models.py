"""Builds the generator and energy modules of a config for a dataset.

Data-dependent arguments are filled in from the dataset's shape unless the config sets them:
'mlp' generators get output_dim = number of features per example; image networks get
image_size = H and channels = C. An 'mlp' generator on image data has its output reshaped to
(N, H, W, C) (the 'mlp' energy flattens its input). The generator is built with
axis_name=parallel.AXIS_NAME, so its BatchNorm (if any) uses global-batch statistics inside the
training steps. `build` is also how a checkpoint's networks are rebuilt from its config.
"""
from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn
import jax
import ml_collections

from kale_jax import data, networks
from kale_jax.train.parallel import AXIS_NAME


class ReshapedGenerator(nn.Module):
    """Wraps a vector generator (N, prod(shape)) -> (N, *shape)."""
    generator: nn.Module
    shape: Tuple[int, ...]

    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        return self.generator(z, train=train).reshape((z.shape[0],) + tuple(self.shape))


def _kwargs(name: str, kwargs: dict, info: data.DatasetInfo, role: str) -> dict:
    kwargs = dict(kwargs)
    if name == "mlp":
        if role == "generator":
            kwargs.setdefault("output_dim", math.prod(info.shape))
        return kwargs
    if info.kind != "image":
        raise ValueError(f"config.model.{role}={name!r} is an image network but data "
                         f"{info.name!r} holds vectors of shape {info.shape}; use 'mlp'")
    kwargs.setdefault("image_size", info.shape[0])
    kwargs.setdefault("channels", info.shape[-1])
    return kwargs


def build(config: ml_collections.ConfigDict,
          info: data.DatasetInfo) -> Tuple[nn.Module, nn.Module]:
    """(generator, energy) Linen modules for config.model on data described by `info`."""
    model = config.model
    generator = networks.get_generator(
        model.generator, axis_name=AXIS_NAME,
        **_kwargs(model.generator, model.generator_kwargs.to_dict()
                  if hasattr(model.generator_kwargs, "to_dict") else model.generator_kwargs,
                  info, "generator"))
    if model.generator == "mlp" and info.kind == "image":
        generator = ReshapedGenerator(generator, tuple(info.shape))
    energy = networks.get_energy(
        model.energy,
        **_kwargs(model.energy, model.energy_kwargs.to_dict()
                  if hasattr(model.energy_kwargs, "to_dict") else model.energy_kwargs,
                  info, "energy"))
    return generator, energy
