"""The EBM baseline: an energy-only model in data space, maximum likelihood with Langevin.

    python -m experiments.train --config=configs/ebm.py --workdir=workdirs/ebm_ring
    python -m experiments.train --config=configs/ebm.py:grid --workdir=workdirs/ebm_grid

`get_config(dataset)` takes any dataset name of kale_jax.data (default 'ring'). The model is
p(x) ∝ exp(-E(x)) with no base (kale_jax.ebm); config.train.criterion = 'ebm' makes
experiments.train run kale_jax.train.ebm_loop.train_ebm instead of the GEBM trainer. It is the
EBM of the paper's toy comparison (truth, GAN, GEBM, EBM), where the EBM "gets the density
roughly but loses the thin support"; train a GEBM on the same data to compare (configs/ring.py,
configs/grid.py, or configs/default.py with --config.data.name=...). Metrics: WORKDIR/metrics.jsonl
(mmd_ebm, mmd_ebm_buffer, mode statistics on ring / grid; kale_jax/train/ebm_loop.py) and
scatter plots in WORKDIR/samples/.

Keys read by the EBM (everything else, e.g. the generator and config.sampler, is ignored):
  model.energy, energy_kwargs  the energy network: the mlp of configs/ring.py (3 x 128, leaky
                               ReLU), so EBM and GEBM energies have the same capacity
  model.energy_floor           None, or E -> relu(E - floor) + floor
  train.criterion              'ebm'
  train.penalty                must be 'none' (energies are regularised by ebm.alpha)
  train.num_steps              EBM updates (one Langevin batch each); batch_size (global),
                               log_every, eval_every, checkpoint_every, keep_checkpoints,
                               soft_clip, tensorboard: as for the GEBM
  optim.energy                 Adam(learning_rate, b1, b2) with optional decay (train/optim.py)
  ebm.langevin_steps           K, Langevin steps per update from the drawn starts
  ebm.step_size                s, the gradient's coefficient in x <- x - s grad E + noise
  ebm.noise_scale              None: sqrt(2 s), the Langevin discretisation of exp(-E); a number:
                               the decoupled noise of short-run EBMs (kale_jax.ebm docstring)
  ebm.clip                     None, or (low, high): positions clipped after every step
  ebm.buffer_size              replay-buffer capacity (FIFO of chain ends, >= batch_size)
  ebm.reinit_prob              probability a chain starts fresh instead of from the buffer
  ebm.init, init_box, init_scale   fresh starts: 'uniform' over init_box^D or 'normal' N(0,
                               init_scale^2 I); the buffer starts full of these
  ebm.alpha                    weight of Du & Mordatch's regulariser alpha (mean E(data)^2 +
                               mean E(neg)^2)
  ebm.eval_steps               Langevin steps of the evaluation's chains from fresh starts
  ebm.unroll                   lax.scan unroll of the Langevin loop
  eval.num_samples, num_heldout   EBM samples and held-out examples per evaluation (MMD)

Settings and why:
  * K = 40 steps of s = 0.01 with noise 0.005 (decoupled, Du & Mordatch's practice): proper
    Langevin noise sqrt(2 s) = 0.14 per step is 7 times the ring's mode width (std 0.02), so the
    chains could not settle in modes of that size; small noise lets the 5% fresh chains reach low
    energy in 40 steps, and the persistent chains (buffer) keep mixing across updates. The
    sampler's stationary law is then exp(-E / T) with T = noise^2 / (2 s) = 1/800: the learned
    E is a model *of this sampler* (energies stay of order 0.1 and exp(-E) itself is nearly
    flat), as for any short-run EBM, so the EBM's samples are drawn with the same sampler.
  * a buffer of 10000 (about 40 batches) and reinit_prob 0.05, Du & Mordatch's values.
  * fresh starts uniform over [-3, 3]^D: the toys lie in [-2.1, 2.1]^2; set
    --config.ebm.init_box for data elsewhere (images: (-1, 1), with clip (-1, 1), which
    get_config('digits') sets).
  * alpha = 0.1, a mild form of Du & Mordatch's regulariser (1.0 on images): it keeps the
    energies from drifting (the loss only sees differences) without flattening them.
  * Adam(1e-3, b1 = 0.5, b2 = 0.999), the GEBM toys' optimiser; batch 256 as configs/ring.py.
  * 5000 updates (a few minutes on 2 CPU cores), evaluated every 1000 with eval_steps = 200,
    five times K, so that chains from fresh starts reach the modes and the MMD measures the
    energy rather than the distance from the initial box.
"""
import ml_collections
from ml_collections import config_dict

from configs import default

_IMAGE_SETS = ("digits", "cifar10", "celeb_a", "downsampled_imagenet/32x32", "lsun/bedroom")


def get_config(dataset: str = "ring") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = dataset or "ring"
    config.model.energy = "mlp"
    config.model.energy_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=3, activation="leaky_relu"))

    config.train.criterion = "ebm"
    config.train.penalty = "none"
    config.train.penalty_weight = 0.0
    config.train.num_steps = 5000
    config.train.batch_size = 256
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.optim.energy = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, b1=0.5, b2=0.999, decay_rate=1.0, decay_steps=1000))

    config.ebm = ml_collections.ConfigDict()
    config.ebm.langevin_steps = 40
    config.ebm.step_size = 0.01
    # Placeholders: typed entries that may also be None (noise_scale None = sqrt(2 step_size)).
    config.ebm.noise_scale = config_dict.placeholder(float)
    config.ebm.noise_scale = 0.005
    config.ebm.clip = config_dict.placeholder(tuple)
    config.ebm.buffer_size = 10000
    config.ebm.reinit_prob = 0.05
    config.ebm.init = "uniform"
    config.ebm.init_box = (-3.0, 3.0)
    config.ebm.init_scale = 1.0
    config.ebm.alpha = 0.1
    config.ebm.eval_steps = 200
    config.ebm.unroll = 1
    if config.data.name in _IMAGE_SETS:  # images are in [-1, 1]
        config.ebm.init_box = (-1.0, 1.0)
        config.ebm.clip = (-1.0, 1.0)
    return config
