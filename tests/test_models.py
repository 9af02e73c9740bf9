"""Tests of kale_jax.train.models: networks are built for the data from what they declare
(input_kind), not from their names."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from kale_jax import data, networks
from kale_jax.errors import ConfigError
from kale_jax.train import models


class _TinyVectorGenerator(nn.Module):
    """A vector generator the library does not know by name: z (N, d) -> (N, output_dim)."""
    output_dim: int = 2
    axis_name: str = None
    input_kind = "vector"

    @nn.compact
    def __call__(self, z, *, train: bool):
        del train
        return nn.Dense(self.output_dim)(z)


def _config(generator: str, energy: str = "mlp", **data_options):
    return ml_collections.ConfigDict({
        "data": dict(name="digits", **data_options),
        "model": {"generator": generator, "energy": energy, "latent_dim": 4,
                  "generator_kwargs": {}, "energy_kwargs": {}}})


def test_a_new_vector_generator_is_built_like_mlp(monkeypatch):
    monkeypatch.setitem(networks.GENERATORS, "tiny_vector", _TinyVectorGenerator)
    assert networks.input_kind("tiny_vector") == "vector"
    assert networks.supported_image_sizes("tiny_vector") == ()
    config = _config("tiny_vector")
    info = data.get_info(config.data)  # digits: images (8, 8, 1)
    generator = models.build_generator(config, info)
    # Vector outputs of the data's size, reshaped to its images.
    assert isinstance(generator, models.ReshapedGenerator)
    assert generator.generator.output_dim == math.prod(info.shape)
    variables = generator.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)
    assert generator.apply(variables, jnp.zeros((3, 4)), train=False).shape == (3,) + info.shape


def test_image_networks_on_vectors_and_bad_kwargs_name_the_config_key():
    config = _config("mlp", energy="sngan")
    config.data = ml_collections.ConfigDict({"name": "ring"})
    with pytest.raises(ConfigError, match=r"^config.model.energy='sngan' is an image network"):
        models.build_energy(config, data.get_info(config.data))
    config = _config("mlp")
    config.model.energy_kwargs = {"hidden": 0}
    with pytest.raises(ConfigError, match=r"^config.model.energy_kwargs: MLPEnergy.hidden=0 "
                                          r"must be an integer >= 1$"):
        models.build_energy(config, data.get_info(config.data))
