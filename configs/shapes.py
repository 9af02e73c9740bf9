"""A GEBM on 'shapes' (16x16 discs with a known 4-cluster law of (cx, cy, r)), DCGAN pair.

    python -m experiments.train --config=configs/shapes.py --workdir=workdirs/shapes

The data lie on a 3-dimensional manifold in pixel space with uneven mass on it (cluster weights
0.4 / 0.3 / 0.2 / 0.1; kale_jax.data.shapes), and every sample can be scored exactly against
the truth: valid_share (share of samples that are clean renderings of one disc), cluster_kl
(nats) and param_w1 (pixels) of the fitted parameters (the data set's exact_metrics).

Networks: the DCGAN pair at 16x16 (4x4x64 -> 8x8x32 -> 16x16x1 and back: width 32, 41,665
generator and 34,401 energy parameters) with a latent dimension of 8 (the data have 3 degrees
of freedom). Schedule as configs/digits.py: 5 energy steps per base step, 100-step warm-ups every 500 base
steps; Adam(3e-4, 0.5, 0.999) for both networks; batch 64.
The energy is floored softly at -10 (E -> relu(E + 10) - 10, the reference's option): without
the floor the energy of the data ran to -30 within 20 base steps and a width-64 pair at
Adam(2e-4) went non-finite by base step 20; with it 1000 base steps ran stable (KALE batch
estimates 0.4-6.6, held-out KALE 2.3 at step 1000, MMD to held-out images base 0.26 vs GEBM
0.08). Evaluation: MALA in latent space at beta = 1, 256 chains of 300 steps after 100 steps of
step-size adaptation (about 4-6 s each).

Recipe: Adam(3e-4) for both networks, 5,000 joint base steps, then 1,000 iterations in which the
base is frozen and the energy trains alone with the gradient penalty at 0.01 (train.refine_from,
as configs/ring.py). Why (seed 0; 256 evaluation samples, 1000 at step 11,000): with Adam(3e-4)
the base's valid_share went 0.48 -> 0.79 -> 0.86 -> 0.89 at 2,500 / 5,000 / 7,500 / 10,000 steps
while the penalised energy stayed weak (held-out KALE 0.12 -> 0.04 nats) and the GEBM tracked
the base (valid 0.84, 0.90, 0.90 at 5,000 / 7,500 / 10,000). Refining the energy of the
10,000-step run for 1,000 iterations raised held-out KALE to 0.40 nats (penalty 0.01) or 0.76
(0.001); with 0.01 the GEBM's fitted parameters came much closer to the truth than the base's
(param_w1 0.052 vs 0.133 px, cluster_kl 0.0021 vs 0.0034, valid_share 0.901 vs 0.895), with
0.001 less so (0.059 px, cluster_kl 0.0087, valid 0.892), so 0.01 it is. 5,000 joint steps keep
a run to about 10 minutes on 2 busy CPU cores (the claims train six).
Speed (the first 60 steps at Adam(1e-4), width 32; the machine was shared, load average 3-5):
    JAX_NUM_CPU_DEVICES=2 XLA_FLAGS=--xla_cpu_use_xnnpack=true python -m experiments.train \
        --config=configs/shapes.py --workdir=/tmp/shapes_time --config.train.num_steps=60 \
        --config.train.log_every=20 --config.train.eval_every=1000000 \
        --config.train.checkpoint_every=1000000 --config.train.tensorboard=False
gave 21.5-22 base steps/s; one CPU device without XNNPACK 15-25 steps/s; under heavy load
(load average 8-13) 4-13 steps/s.
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = "shapes"
    config.data.image_size = 16
    config.model.generator = "dcgan"
    config.model.energy = "dcgan"
    config.model.latent_dim = 8
    config.model.generator_kwargs = ml_collections.ConfigDict(dict(width=32))
    config.model.energy_kwargs = ml_collections.ConfigDict(dict(width=32))
    config.model.energy_floor = -10.0
    config.train.num_steps = 6000
    config.train.refine_from = 5000
    config.train.refine_penalty_weight = 0.01
    config.train.batch_size = 64
    config.train.log_every = 500
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    for optim in (config.optim.energy, config.optim.base):
        optim.learning_rate = 3e-4
    config.sampler.kernel = "mala"
    config.sampler.num_steps = 300
    config.sampler.step_size = 0.01
    config.sampler.num_adaptation_steps = 100
    config.eval.num_heldout = 1000
    config.eval.num_samples = 256
    # python -m experiments.sample: 1000 chains, metrics every 50 of the 300 MALA steps, MMD
    # against 1000 fresh held-out images.
    config.sample.num_samples = 1000
    config.sample.chunk_size = 500
    config.sample.record_every = 50
    config.sample.mmd_num_samples = 1000
    return config
