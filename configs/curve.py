"""A GEBM on 'curve': a known, three-mode density along a wavy 1-D curve in 2-D (the paper's toy).

    python -m experiments.train --config=configs/curve.py --workdir=workdirs/curve

The data (kale_jax.data.curve) has zero thickness and a known law along the curve, so samples
are scored exactly (kale_jax.data.curve.metrics): distance to the curve and share within 0.05
of it (the support), and the Wasserstein-1 and Kolmogorov-Smirnov distances of their arc-length
coordinates to the true law (the density along it). `--config.data.noise=0.02` thickens the data
with Gaussian noise; the metrics still refer to the thin curve.

Choices (a starting point; length and recipe are to be tuned with real runs):
* latent_dim 1: the support is a 1-D curve, so a base with a 1-D latent can map onto it without
  leaving mass off it (a wider latent gives the base a 2-D pushforward that must be squeezed
  onto a line); the base then only misses the density along the curve, which the energy fixes.
  With one latent dimension the GEBM's latent MCMC is also 1-D and mixes easily.
* Networks as configs/ring.py: a relu base of two hidden layers of 128 units (a 1-D input
  gives a piecewise-linear path; it needs a few dozen pieces to follow bends of radius 0.3 to
  well within 0.05) and a slightly larger leaky-relu energy.
* Batch 256 and Adam(1e-3, 0.5, 0.999) for both networks as ring.py (default.py's optimiser);
  5000 base steps (5 energy steps each), a modest budget for a 2-D problem.
* Evaluation every 1000 steps: MALA in latent space at beta = 1, 500 steps after 200 of
  step-size adaptation, 2000 chains (default.py's eval sizes).
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = "curve"
    config.data.noise = 0.0  # std of Gaussian noise around the curve (0: exactly on it)
    config.model.latent_dim = 1
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=2, activation="relu", batch_norm=False))
    config.model.energy_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=3, activation="leaky_relu"))
    config.train.num_steps = 5000
    config.train.batch_size = 256
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.sampler.num_steps = 500
    config.sampler.num_adaptation_steps = 200
    return config
