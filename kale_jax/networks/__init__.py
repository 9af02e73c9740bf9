"""Generators (bases) and energies as Flax Linen modules, chosen by name.

    generator = get_generator('sngan', image_size=32, channels=3, width=64)
    variables = init_variables(generator, key, jnp.zeros((1, latent_dim)))
    images = generator.apply(variables, z, train=False)             # (N, 32, 32, 3) in [-1, 1]
    images, updates = generator.apply(variables, z, train=True, mutable=['batch_stats'])

Names: 'dcgan', 'sngan', 'resnet' (images, NHWC, image_size 32 or 64; dcgan also 16) and
'mlp' (vectors); generators also 'realnvp' and 'maf' (normalizing flows on vectors with exact
log_prob, flows.py).
Generators map z (N, latent_dim) to samples; energies map samples (N, ...) to (N,) float32.
All mutable state (BatchNorm averages, spectral-norm power-iteration vectors) is in the
'batch_stats' collection; train=False reads it and updates nothing.

Convs are NHWC; the resampling convs of common.py avoid XLA's zero-dilated forms.

The image networks come in two families, chosen by their `variant` keyword: 'ours' (default;
the SNGAN paper's layouts, cheaper) and 'authors' (the networks of the authors' GEBM code,
authors.py, to reproduce the paper's numbers and compare speed on equal networks):
    energy = get_energy('sngan', variant='authors')
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax

from kale_jax.networks import common
from kale_jax.networks.authors import VARIANTS
from kale_jax.networks.flows import MAF, RealNVP, is_flow
from kale_jax.networks.conv import DCGANEnergy, DCGANGenerator, SNGANEnergy, SNGANGenerator
from kale_jax.networks.mlp import MLPEnergy, MLPGenerator
from kale_jax.networks.resnet import ResNetEnergy, ResNetGenerator

GENERATORS = {
    "dcgan": DCGANGenerator,
    "sngan": SNGANGenerator,
    "resnet": ResNetGenerator,
    "mlp": MLPGenerator,
    "realnvp": RealNVP,
    "maf": MAF,
}
ENERGIES = {
    "dcgan": DCGANEnergy,
    "sngan": SNGANEnergy,
    "resnet": ResNetEnergy,
    "mlp": MLPEnergy,
}
GENERATOR_NAMES: Tuple[str, ...] = tuple(GENERATORS)
ENERGY_NAMES: Tuple[str, ...] = tuple(ENERGIES)
IMAGE_NETWORK_NAMES: Tuple[str, ...] = tuple(
    n for n, c in GENERATORS.items() if c.input_kind == "image")
# Generators with an exact density (flows.py): latent_dim = data dim, extra methods
# 'forward', 'inverse', 'log_prob', 'sample'.
FLOW_NAMES: Tuple[str, ...] = ("realnvp", "maf")

__all__ = [
    "GENERATORS", "ENERGIES", "GENERATOR_NAMES", "ENERGY_NAMES", "IMAGE_NETWORK_NAMES",
    "FLOW_NAMES", "VARIANTS", "RealNVP", "MAF", "is_flow",
    "get_generator", "get_energy", "input_kind", "supported_image_sizes", "module_attributes",
    "init_variables", "count_parameters",
    "DCGANGenerator", "DCGANEnergy", "SNGANGenerator", "SNGANEnergy",
    "ResNetGenerator", "ResNetEnergy", "MLPGenerator", "MLPEnergy",
]


def module_attributes(cls: type) -> Tuple[str, ...]:
    """The keyword arguments a network class accepts (its dataclass fields)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def _build(kind: str, registry: Dict[str, type], name: str, kwargs: Dict[str, Any]) -> nn.Module:
    if name not in registry:
        raise ValueError(f"unknown {kind} name {name!r}; allowed: {tuple(registry)}")
    cls = registry[name]
    allowed = module_attributes(cls)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{kind} {name!r} got unknown keyword arguments {unknown}; "
                         f"allowed: {allowed}")
    return cls(**kwargs)


def get_generator(name: str, **kwargs: Any) -> nn.Module:
    """The generator called `name` built with `kwargs` (see the class for its attributes).

    Raises ValueError for an unknown name, an unknown keyword or a bad value (e.g. an
    unsupported image_size)."""
    return _build("generator", GENERATORS, name, kwargs)


def get_energy(name: str, **kwargs: Any) -> nn.Module:
    """The energy called `name` built with `kwargs` (see the class for its attributes).

    Raises ValueError for an unknown name, an unknown keyword or a bad value."""
    return _build("energy", ENERGIES, name, kwargs)


def _network_class(name: str) -> type:
    cls = GENERATORS.get(name) or ENERGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown network name {name!r}; allowed: "
                         f"{tuple(sorted(set(GENERATORS) | set(ENERGIES)))}")
    return cls


def input_kind(name: str) -> str:
    """'image' or 'vector': what the network `name` takes (energies) or makes (generators).

    Declared by each class as `input_kind`, so a new vector network needs no edit elsewhere.
    """
    return _network_class(name).input_kind


def supported_image_sizes(name: str) -> Tuple[int, ...]:
    """Image sides the network `name` supports (its class's `image_sizes`); () for vectors."""
    cls = _network_class(name)
    return tuple(cls.image_sizes) if cls.input_kind == "image" else ()


@functools.partial(jax.jit, static_argnums=0)
def _init(module: nn.Module, key: jax.Array, example_input: jax.Array) -> Dict[str, Any]:
    return module.init(key, example_input, train=False)


def init_variables(module: nn.Module, key: jax.Array, example_input: jax.Array) -> Dict[str, Any]:
    """Initialised variables {'params': ..., ['batch_stats': ...]} (jit-compiled init).

    Args:
      module: a generator or energy from this package.
      key: PRNG key for the weights (and spectral-norm start vectors).
      example_input: a batch with the real input's shape after the batch axis, e.g.
        zeros((1, latent_dim)) for a generator, zeros((1, S, S, C)) for an image energy.
    """
    return dict(_init(module, key, example_input))


def count_parameters(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or jax.ShapeDtypeStruct (e.g. 'params')."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
