"""A GEBM on the ring of 8 Gaussians (2-D), the mode-collapse benchmark of Metz et al. (2017).

    python -m experiments.train --config=configs/ring.py --workdir=workdirs/ring

Evaluation adds the benchmark's mode statistics (share of samples within 3 std of a mode, modes
covered; kale_jax.data.toys) for base and GEBM samples, and scatter plots of data / base / GEBM.
Networks follow the benchmark's scale (two hidden layers of 128 units in the base); the energy
is a little larger than the base, as in default.py.
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = "ring"
    config.model.latent_dim = 8
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=2, activation="relu", batch_norm=False))
    config.model.energy_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=3, activation="leaky_relu"))
    config.train.num_steps = 20000
    config.train.batch_size = 256
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    config.sampler.num_steps = 500
    config.sampler.num_adaptation_steps = 200
    return config
