"""A tiny config for end-to-end tests: a few steps of tiny networks, seconds on a CPU.

    --config=configs/test.py          the toy ring (2-D vectors, mlp pair)
    --config=configs/test.py:digits   digits as 8x8 images with the mlp pair (the image path)
    --config=configs/test.py:sphere3d etc.: any vector dataset with the mlp pair (sphere3d, grid,
                                      curve, ...)
    --config=configs/test.py:ebm      the energy-only EBM baseline (configs/ebm.py) on the ring;
                                      ebm_<dataset> (e.g. ebm_grid, ebm_curve) on another dataset
"""
import ml_collections

from configs import default


def get_config(dataset: str = "ring") -> ml_collections.ConfigDict:
    if dataset and (dataset == "ebm" or dataset.startswith("ebm_")):
        return _ebm_config(dataset[len("ebm_"):] or "ring")
    config = default.get_config()
    config.data.name = dataset or "ring"
    config.model.latent_dim = 4
    # BatchNorm in the generator, so its cross-device synchronisation is exercised.
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(hidden=16, depth=1, batch_norm=True))
    config.model.energy_kwargs = ml_collections.ConfigDict(dict(hidden=16, depth=1))
    if config.data.name == "digits":
        # The image path (image grids, NHWC batches) at the originals' 8x8 size with the mlp pair:
        # compiling even tiny conv nets takes about a minute on 2 cores, and the conv nets have
        # their own tests; configs/digits.py trains DCGAN nets at 32x32.
        config.data.image_size = 8
        config.model.latent_dim = 8
        config.model.generator_kwargs.output_activation = "tanh"  # images are in [-1, 1]

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
    config.sample.num_samples = 16
    config.sample.chunk_size = 8
    config.sample.record_every = 2
    config.sample.num_grid = 16
    config.sample.num_gif_chains = 4
    config.sample.num_data_examples = 32
    config.sample.num_kale_examples = 32
    config.sample.mmd_num_samples = 16
    return config


def _ebm_config(dataset: str) -> ml_collections.ConfigDict:
    """configs/ebm.py with tiny networks, chains, buffer and run."""
    from configs import ebm  # pylint: disable=g-import-not-at-top
    config = ebm.get_config(dataset)
    config.model.energy_kwargs = ml_collections.ConfigDict(dict(hidden=16, depth=1))
    config.train.num_steps = 6
    config.train.batch_size = 16
    config.train.log_every = 2
    config.train.eval_every = 3
    config.train.checkpoint_every = 2
    config.train.keep_checkpoints = 2
    config.ebm.langevin_steps = 3
    config.ebm.eval_steps = 4
    config.ebm.buffer_size = 64
    config.eval.num_heldout = 32
    config.eval.num_samples = 16
    return config
