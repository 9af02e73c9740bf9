"""A GEBM on 'curve': a known, three-mode density along a wavy 1-D curve in 2-D (the paper's toy).

    python -m experiments.train --config=configs/curve.py --workdir=workdirs/curve

The data (kale_jax.data.curve) has zero thickness and a known law along the curve, so samples
are scored exactly (kale_jax.data.curve.metrics): distance to the curve and share within 0.05
of it (the support), and the Wasserstein-1 and Kolmogorov-Smirnov distances of their arc-length
coordinates to the true law (the density along it). `--config.data.noise=0.02` thickens the data
with Gaussian noise; the metrics still refer to the thin curve.

Choices:
* latent_dim 1: the support is a 1-D curve, so a base with a 1-D latent can map onto it without
  leaving mass off it (a wider latent gives the base a 2-D pushforward that must be squeezed
  onto a line); the base then only misses the density along the curve, which the energy fixes.
  With one latent dimension the GEBM's latent MCMC is also 1-D and mixes easily.
* Networks as configs/ring.py (imported): a relu base of two hidden layers of 128 units (a 1-D input
  gives a piecewise-linear path; it needs a few dozen pieces to follow bends of radius 0.3 to
  well within 0.05) and a slightly larger leaky-relu energy.
* Batch 256 and Adam(1e-3, 0.5, 0.999) for both networks as ring.py (default.py's optimiser);
  10,000 base steps (5 energy steps each).
* Evaluation every 2000 steps: MALA in latent space at beta = 1, 500 steps after 200 of
  step-size adaptation, 2000 chains (default.py's eval sizes).

What the runs showed (seed 0, 2000 samples per figure; arc_w1 of 2000 exact samples is 0.033 on
average and 2000 base samples of one model scatter between 0.03 and 0.06 from key to key): the
KALE-trained base alone gets both the support and the density. After 5,000 steps its arc_w1 was
0.069 and 84% of its samples lay within 0.05 of the curve; after 20,000 steps 0.032 (the floor)
and 95%. A base a tenth the size (16 hidden units, one layer) did as well (0.040, 98%), and so did
a 2-D latent (0.033, 90%). Under the gradient penalty (0.1) the energy then finds nothing to
correct (held-out KALE 0.0003-0.01 nats, ESS of exp(-E) 0.998-1.0), so the GEBM equals its base
within noise. The refinement phase of configs/ring.py (energy alone against the frozen base,
penalty 0.01, 0.003, 0.001 or 0.0003) made the energy a sharp ridge along the curve (held-out
KALE up to 6 nats): the GEBM's samples moved onto the curve (0.0003: 98% within 0.05) but their
density along it got worse (arc_w1 0.05-0.69), so it is not used here.
"""
import ml_collections

from configs import ring


def get_config() -> ml_collections.ConfigDict:
    config = ring.get_config()  # ring.py's networks, batch, optimiser and sampler
    config.data.name = "curve"
    config.data.noise = 0.0  # std of Gaussian noise around the curve (0: exactly on it)
    config.model.latent_dim = 1
    config.train.num_steps = 10000
    config.train.refine_from = None  # no refinement phase (see above)
    config.train.refine_penalty_weight = None
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    return config
