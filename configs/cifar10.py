"""CIFAR-10 (32x32), the authors' SN-ResNet base and energy, the paper's training recipe.

    python -m experiments.train --config=configs/cifar10.py --workdir=/tmp/kale_cifar10 \
        --config.data.data_dir=/path/to/tensorflow_datasets

The data must be prepared first (nothing downloads during training):
    python -m experiments.prepare_data --config=configs/cifar10.py \
        --config.data.data_dir=/path/to/tensorflow_datasets
Held-out data (eval.*): the official 10k test split.

`paper_recipe` below is shared by the four image configs (cifar10, celeba, imagenet32, lsun).

Where the values come from
  From the paper (Arbel, Zhou & Gretton, ICLR 2021; the recipe of docs/design.md):
    Adam, learning rate 1e-4 for the energy and the base, betas (0.5, 0.999); batch 128;
    latent dimension 100, z ~ N(0, I); n_critic = 5 energy steps per base step, 100 energy
    steps before the first base step and again every 500 base steps; gradient penalty
    (zero-centred, on interpolates) with weight 1.0; 150k base steps; the SN-ResNet pair
    (the paper also reports the SNGAN ConvNet pair: --config.model.generator=sngan
    --config.model.energy=sngan).
  From the authors' code (MichaelArbel/GeneralizedEBM):
    the networks: variant='authors' of both (kale_jax/networks/authors.py), because these
    networks produced the paper's numbers; their own widths (width=None: resnet 128 / 128,
    sngan and dcgan 64). Our networks (the SNGAN paper's layouts: a 256-channel ResNet
    generator with 1x1 shortcut convs) are one override away per network:
    --config.model.generator_kwargs.variant=ours --config.model.energy_kwargs.variant=ours.
    latent sampler = kinetic Langevin with step 2 sqrt(lmc_gamma) = 2 sqrt(0.01) = 0.2 and
    friction lmc_kappa = 0.04, inverse temperature beta = 100 (its "temperature"), 1000 steps
    for the final samples; resolution 32x32 for every data set; data scaled to [-1, 1].
    The plateau learning-rate scheduler (train.plateau, kale_jax.train.plateau): their
    MMDScheduler with freq_fid 2000, oldest_fid_iter 20000, factor 0.8 (their ExponentialLR
    gamma), 3 failures, p > 0.1, 2048 samples. Not reproduced: their training loop also
    multiplied both rates by 0.8 at every base step that is an odd multiple of 5000 (5k, 15k,
    ...: trainer.train_epoch's `else` branch when no FID check falls on that step), about
    optim.*.decay_rate=0.8 per decay_steps=10000 if wanted.
    The code also offers an energy floor at -10 and the gradient transform g -> 2g/(1+g^2);
    they are off here (the paper's recipe does not list them): model.energy_floor=-10.0 and
    train.soft_clip=True turn them on.
  Our choices:
    constant learning rates (optim.*.decay_rate = 1.0); seed 0; tfds' held-out splits for
    evaluation (the authors' code evaluated CelebA and ImageNet32 on the training set);
    the cadence: log every 100 base steps, evaluate and checkpoint every 5000, keep 3
    checkpoints; evaluation on 1000 held-out images (KALE estimate) and 256 base / GEBM
    samples (MMD, picture grids) drawn with 100 sampler steps, to bound the evaluation's cost
    and memory on one accelerator (final samples and FID are the sample binary's job);
    A initialised from 50 base batches (default.py); model.dtype float32 (see paper_recipe:
    bfloat16 is one override away).
"""
import ml_collections
from ml_collections import config_dict

from configs import default


def paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the paper's image-training recipe and our evaluation cadence on `config` (in place).

    The data keys are left to the caller; every tfds key is present so that any of them can be
    overridden on the command line (the config is locked).
    """
    config.seed = 0

    config.data.data_dir = ""  # '' : tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    config.data.manual_dir = ""  # only read when preparing the data (tfds_images.prepare)
    config.data.shuffle_buffer = config_dict.placeholder(int)  # None: per-data-set default
    config.data.prefetch = 4
    config.data.cache = False

    config.model.generator = "resnet"
    config.model.energy = "resnet"
    config.model.latent_dim = 100
    # The authors' networks (they produced the paper's numbers); 'ours' is one override away.
    # width None: each network's own width for its variant (kale_jax.networks).
    for kwargs in ("generator_kwargs", "energy_kwargs"):
        config.model[kwargs] = ml_collections.ConfigDict(
            dict(variant="authors", width=config_dict.placeholder(int)))
    config.model.energy_floor = config_dict.placeholder(float)  # None: off
    # float32 compute, to reproduce the paper's numbers as they were made. On TPUs / recent
    # GPUs, --config.model.dtype=bfloat16 is the speed switch (parameters, optimiser state, A,
    # losses and MCMC stay float32, and checkpoints are the same, so a run can change it when it
    # resumes); sample in float32 at beta = 100: an energy off by d moves the potential by 100 d
    # (docs/design.md, "Precision").
    config.model.dtype = "float32"

    config.train.num_steps = 150_000
    config.train.batch_size = 128
    config.train.n_critic = 5
    config.train.n_critic_warmup = 100
    config.train.warmup_every = 500
    config.train.criterion = "kale"
    config.train.penalty = "gradient"
    config.train.penalty_weight = 1.0
    config.train.soft_clip = False
    config.train.a_init_batches = 50
    config.train.log_every = 100
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.train.keep_checkpoints = 3
    # The authors' plateau scheduler (utils/fid_scheduler.MMDScheduler in their code, with
    # --freq_fid=2000 --oldest_fid_iter=20000 --scheduler_gamma=0.8 and their fixed 3 failures,
    # p > 0.1 and 2048 samples): every 2000 base steps a relative MMD test (KID's kernel on
    # Inception features; MMD^2 without the weights) against the samples of 11 checks before,
    # both learning rates x0.8 after 3 tests in a row without a significant improvement.
    config.train.plateau.enabled = True
    config.train.plateau.every = 2000
    config.train.plateau.lookback = 11  # oldest_fid_iter / freq_fid + 1
    config.train.plateau.patience = 3
    config.train.plateau.factor = 0.8
    config.train.plateau.p_value = 0.1
    config.train.plateau.num_samples = 2048

    for optimiser in (config.optim.energy, config.optim.base):
        optimiser.learning_rate = 1e-4
        optimiser.b1 = 0.5
        optimiser.b2 = 0.999
        optimiser.decay_rate = 1.0
        optimiser.decay_steps = 10_000

    config.sampler.kernel = "kla"
    config.sampler.num_steps = 100
    config.sampler.step_size = 0.2
    config.sampler.friction = 0.04
    config.sampler.beta = 100.0
    config.sampler.num_adaptation_steps = 0  # kla is unadjusted: nothing to adapt

    config.eval.num_heldout = 1000
    config.eval.num_samples = 256
    return config


def get_config() -> ml_collections.ConfigDict:
    config = paper_recipe(default.get_config())
    config.data.name = "cifar10"
    config.data.image_size = 32
    return config
