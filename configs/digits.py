"""A GEBM on scikit-learn's digits (embedded, 1500 train / 297 test images) at 32x32, DCGAN nets.

    python -m experiments.train --config=configs/digits.py --workdir=workdirs/digits

Why conv nets at 32x32 rather than the mlp pair on the 64-d originals: this is the paper's image
setting (DCGAN base and energy, latent dimension 100, Adam(1e-4, 0.5, 0.999), 5 energy steps per
base step with 100-step warm-up rounds every 500), and it runs the exact pipeline the tfds image
sets use (NHWC images in [-1, 1], the image networks, image grids), on data that needs no
download. The digits are resized bilinearly to 32x32 (kale_jax.data.digits). An mlp pair on 8x8
images is what configs/test.py:digits uses for fast end-to-end tests. Expect hours on a CPU; a
GPU makes it minutes.

Evaluation draws image grids of base and GEBM samples (samples/base_*.png, samples/gebm_*.png) and
MMD on pixels against the test split (at most 297 images, hence eval.num_* below).
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = "digits"
    config.data.image_size = 32
    config.model.generator = "dcgan"
    config.model.energy = "dcgan"
    config.model.latent_dim = 100
    config.model.generator_kwargs = ml_collections.ConfigDict(dict(width=32))
    config.model.energy_kwargs = ml_collections.ConfigDict(dict(width=32))
    config.train.num_steps = 20000
    config.train.batch_size = 128
    config.train.log_every = 100
    config.train.eval_every = 2000
    config.train.checkpoint_every = 1000
    for optim in (config.optim.energy, config.optim.base):
        optim.learning_rate = 1e-4
    config.sampler.kernel = "mala"
    config.sampler.num_steps = 500
    config.sampler.step_size = 0.01
    config.sampler.num_adaptation_steps = 200
    config.eval.num_heldout = 297
    config.eval.num_samples = 256
    # python -m experiments.sample: 500 chains, metrics every 50 of the 500 MALA steps; MMD and
    # FID statistics against the 297 test images (the split's size caps num_data_examples).
    config.sample.num_samples = 500
    config.sample.chunk_size = 500
    config.sample.record_every = 50
    config.sample.mmd_num_samples = 500
    return config
