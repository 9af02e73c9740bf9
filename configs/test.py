"""A tiny config for end-to-end tests: a few steps of tiny networks, seconds on a CPU.

    --config=configs/test.py          the toy ring (2-D vectors, mlp pair)
    --config=configs/test.py:digits   digits at 32x32 with tiny DCGAN networks (image path)
    --config=configs/test.py:sphere3d etc.: any vector dataset with the mlp pair
"""
import ml_collections

from configs import default


def get_config(dataset: str = "ring") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = dataset or "ring"
    config.model.latent_dim = 4
    # BatchNorm in the generator, so its cross-device synchronisation is exercised.
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(hidden=16, depth=1, batch_norm=True))
    config.model.energy_kwargs = ml_collections.ConfigDict(dict(hidden=16, depth=1))
    if config.data.name == "digits":
        config.data.image_size = 32
        config.model.generator = "dcgan"
        config.model.energy = "dcgan"
        config.model.latent_dim = 8
        config.model.generator_kwargs = ml_collections.ConfigDict(dict(width=4))
        config.model.energy_kwargs = ml_collections.ConfigDict(dict(width=4))

    config.train.num_steps = 6
    config.train.batch_size = 16
    config.train.n_critic = 2
    config.train.n_critic_warmup = 3
    config.train.warmup_every = 4
    config.train.a_init_batches = 2
    config.train.log_every = 2
    config.train.eval_every = 3
    config.train.checkpoint_every = 2
    config.train.keep_checkpoints = 2

    config.sampler.kernel = "ula"  # the cheapest kernel to compile
    config.sampler.num_steps = 4
    config.sampler.num_adaptation_steps = 0
    config.eval.num_heldout = 32
    config.eval.num_samples = 16
    return config
