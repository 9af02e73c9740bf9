"""Builds the generator and energy modules of a config for a dataset.

Data-dependent arguments are filled in from the dataset's shape unless the config sets them:
vector generators (class attribute input_kind = 'vector', e.g. 'mlp') get output_dim = number of
features per example; image networks get image_size = H and channels = C. A vector generator on
image data has its output reshaped to (N, H, W, C) (the 'mlp' energy flattens its input). The
generator (and an energy that takes one, e.g. dcgan's, whose 'authors' variant has BatchNorm) is
built with axis_name=parallel.AXIS_NAME, so its BatchNorm (if any) uses global-batch statistics
inside the training steps. `build` is also how a checkpoint's networks are rebuilt
from its config.

config.model.dtype ('float32' when absent) is the networks' compute dtype: under 'bfloat16' both
modules come wrapped in networks.precision.Precision (float32 parameters, state, inputs and
outputs; bfloat16 matmuls and convs inside), with the same variable tree as unwrapped, so every
caller (training steps, evaluation, latent MCMC, sampling, kale_jax.load) gets it and
checkpoints do not depend on it.
"""
from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn
import jax
import ml_collections

from kale_jax import checks, data, networks
from kale_jax.errors import ConfigError
from kale_jax.networks import precision
from kale_jax.train.parallel import AXIS_NAME


class ReshapedGenerator(nn.Module):
    """Wraps a vector generator (N, prod(shape)) -> (N, *shape)."""
    generator: nn.Module
    shape: Tuple[int, ...]

    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        return self.generator(z, train=train).reshape((z.shape[0],) + tuple(self.shape))


def _kwargs(name: str, kwargs: dict, info: data.DatasetInfo, role: str) -> dict:
    kwargs = dict(kwargs)
    if name in networks.FLOW_NAMES:
        return _flow_kwargs(name, kwargs, info)
    if networks.input_kind(name) == "vector":
        if role == "generator":
            kwargs.setdefault("output_dim", math.prod(info.shape))
        return kwargs
    if info.kind != "image":
        raise ConfigError(f"config.model.{role}={name!r} is an image network but data "
                          f"{info.name!r} holds vectors of shape {info.shape}; use 'mlp'")
    kwargs.setdefault("image_size", info.shape[0])
    kwargs.setdefault("channels", info.shape[-1])
    return kwargs


def _flow_kwargs(name: str, kwargs: dict, info: data.DatasetInfo) -> dict:
    """A flow generator models vectors and its dimension is the data's (filled in here)."""
    if info.kind != "vector" or len(info.shape) != 1:
        raise ConfigError(f"config.model.generator={name!r} is a flow on vectors but data "
                          f"{info.name!r} has examples of shape {info.shape}")
    kwargs.setdefault("dim", info.shape[0])
    if kwargs["dim"] != info.shape[0]:
        raise ConfigError(f"config.model.generator_kwargs.dim={kwargs['dim']} must equal the "
                          f"data dimension {info.shape[0]} of {info.name!r} for a flow")
    return kwargs


def latent_dim(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> int:
    """config.model.latent_dim; for a flow generator None means the data dimension."""
    if config.model.latent_dim is None and config.model.generator in networks.FLOW_NAMES:
        return math.prod(info.shape)
    return config.model.latent_dim


def build(config: ml_collections.ConfigDict,
          info: data.DatasetInfo) -> Tuple[nn.Module, nn.Module]:
    """(generator, energy) Linen modules for config.model on data described by `info`."""
    return build_generator(config, info), build_energy(config, info)


def build_generator(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> nn.Module:
    """The generator module of config.model on data described by `info` (a vector generator on
    image data has its outputs reshaped to the images' shape)."""
    model = config.model
    if (model.generator in networks.FLOW_NAMES and model.latent_dim is not None
            and model.latent_dim != math.prod(info.shape)):
        raise ConfigError(f"config.model.latent_dim={model.latent_dim} must equal the data "
                          f"dimension {math.prod(info.shape)} of {info.name!r} for the flow "
                          f"generator {model.generator!r}")
    dtype = compute_dtype(config)
    generator = _construct(networks.get_generator, model.generator, "generator", dict(
        axis_name=AXIS_NAME, **_kwargs(model.generator, _plain(model.generator_kwargs), info,
                                       "generator")))
    if networks.input_kind(model.generator) == "vector" and info.kind == "image":
        generator = ReshapedGenerator(generator, tuple(info.shape))
    return precision.with_dtype(generator, dtype)


def build_energy(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> nn.Module:
    """The energy module of config.model on data described by `info` (the generator's settings
    are not read: energy-only models use this, see kale_jax.train.ebm_loop)."""
    model = config.model
    kwargs = _kwargs(model.energy, _plain(model.energy_kwargs), info, "energy")
    cls = networks.ENERGIES.get(model.energy)
    if cls is not None and "axis_name" in networks.module_attributes(cls):
        kwargs.setdefault("axis_name", AXIS_NAME)  # BatchNorm in an energy (dcgan, 'authors')
    energy = _construct(networks.get_energy, model.energy, "energy", kwargs)
    return precision.with_dtype(energy, compute_dtype(config, with_generator=False))


def compute_dtype(config: ml_collections.ConfigDict, with_generator: bool = True) -> str:
    """config.model.dtype, 'float32' when absent (configs older than the key).

    Args:
      config: a training config.
      with_generator: the run builds config.model.generator (False: energy-only models).
    Returns:
      one of networks.precision.DTYPES.
    Raises:
      ConfigError: another value, or a compute dtype other than float32 with a flow generator
        (its log-densities are methods the precision wrapper does not cover).
    """
    dtype = checks.check_choice(config.model.get("dtype", "float32"), "config.model.dtype",
                                precision.DTYPES, fix="use 'float32' (default) or 'bfloat16' "
                                "(bfloat16 compute, float32 parameters)")
    generator = config.model.get("generator", None) if with_generator else None
    if dtype != "float32" and generator in networks.FLOW_NAMES:
        raise ConfigError(f"config.model.dtype={dtype!r} is not supported for the flow generator "
                          f"{generator!r} (its log-densities run in float32); use "
                          "config.model.dtype='float32'")
    return dtype


def _plain(kwargs) -> dict:
    return kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)


def _construct(get, name: str, role: str, kwargs: dict) -> nn.Module:
    """get(name, **kwargs); a bad keyword or value is a ConfigError naming
    config.model.<role>_kwargs."""
    try:
        return get(name, **kwargs)
    except ValueError as error:  # e.g. "MLPEnergy.hidden=0 must be an integer >= 1"
        raise ConfigError(f"config.model.{role}_kwargs: {error}") from error
