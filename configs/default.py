"""Default config: a GEBM on sphere3d (3-D vectors), the README's main job.

sphere3d (kale_jax.data.sphere3d) is itself a GEBM: a base supported on a deformed sphere (a 2-D
surface in R^3) reweighted by a known energy. A small MLP base with a 3-dimensional latent learns
the surface roughly and cannot match the density on it; the energy corrects both. The run ends with
`mmd_base` and `mmd_gebm` in the last line of WORKDIR/metrics.jsonl: GEBM samples (latent MCMC)
should be closer to fresh true samples than base samples are.

Tuned to finish in under 5 minutes on 2 CPU cores:
    python -m experiments.train --config=configs/default.py --workdir=workdirs/default
Any key can be overridden on the command line, e.g. --config.train.num_steps=10.

Keys (the layout every config shares; tools and tests rely on these names):
  seed                     root of every random draw (networks, latents, data order)
  parallel                 'shard_map' (default) or 'pmap'
  data.name, data.data_dir dataset (kale_jax.data.DATASETS) and its directory ('' for embedded)
  model.generator/energy   network names (kale_jax.networks); *_kwargs their constructor arguments
                           (data-dependent ones are filled in from the dataset, see train/models.py)
  model.latent_dim         latent dimension d, z ~ N(0, I_d)
  model.energy_floor       None, or E -> relu(E - floor) + floor (reference: -10)
  model.dtype              compute dtype of both networks: 'float32' or 'bfloat16' (parameters,
                           optimiser state, A, energies, losses and MCMC stay float32; a run can
                           resume or sample with the other dtype; kale_jax.networks.precision)
  model.base_objective     'kale' (KALE base step), 'mle' (flow generators only: maximum
                           likelihood of the flow) or 'gebm_mle' (flow generators only: maximum
                           likelihood of the GEBM flow x exp(-E) / Z, jointly with the energy
                           step); see configs/tabular_default.py
  train.num_steps          base (generator) steps; the run's step counter
  train.batch_size         GLOBAL batch (data and latents), divided over all devices
  train.n_critic           energy steps before each base step ...
  train.n_critic_warmup    ... except before base steps 0, warmup_every, 2 warmup_every, ...
  train.criterion          'kale', or the GAN baselines 'logistic' / 'wasserstein'
  train.penalty            'gradient' | 'l2' | 'gradient_l2' | 'none', weight penalty_weight
  train.refine_from        None, or the base step from which the base is frozen and the remaining
                           iterations train the energy alone (same schedule), with penalty weight
                           refine_penalty_weight (None: penalty_weight); see configs/ring.py
  train.soft_clip          energy gradients through g -> 2g / (1 + g^2) (A's gradient is left
                           out: kale.soft_clip_gradients)
  train.a_init_batches     base batches for the Monte-Carlo initialisation of A
  train.log_every / eval_every / checkpoint_every / keep_checkpoints   in base steps
  train.plateau.*          the plateau scheduler (kale_jax.train.plateau; off by default, on in
                           the paper-recipe configs): enabled; every (base steps between checks,
                           a multiple of log_every; the authors' freq_fid); lookback (checks
                           between the two samples a test compares); patience (failed tests
                           before a decay, then as many checks without a test); factor (on both
                           learning rates at a decay); p_value (a test with p below it is a
                           significant improvement); num_samples (base samples and held-out
                           examples per check); metric ('auto': 'kid' on Inception features of
                           images when sample.inception_path exists, else 'mmd'); and
                           wait_for_improvement (no decay before the first clear improvement)
  train.tensorboard        TensorBoard events too (the [tensorboard] extra); metrics.jsonl always
  optim.energy / optim.base   Adam: learning_rate, b1, b2; exponential decay decay_rate per
                           decay_steps updates (1.0 = constant)
  sampler.*                GEBM sampling (kale_jax.sampling.from_config, validated once): kernel,
                           num_steps, step_size, beta (inverse temperature), num_adaptation_steps,
                           friction ('kla'), decay_factor / decay_every (step size x
                           decay_factor every decay_every steps, the authors' recipe), ...; named
                           settings: kale_jax.sampling.PRESETS (experiments.sample --preset=NAME)
  eval.num_heldout         held-out examples for the KALE estimate
  eval.num_samples         base / GEBM samples (latent MCMC chains) drawn for MMD and pictures
  debug.nan_at_step        fault injection for tests: base step k (1, 2, ...) runs with NaN energy
                           parameters, so the non-finite guard stops the run; -1 (default) is off
  debug.sleep_per_step_s   sleep this long after each base step (tests land signals mid-run); 0 off
  debug.full_disk_at_step  fault injection for tests that cannot mount a small file system: from
                           base step k on, every new write to the workdir (checkpoint, metrics
                           row, picture) fails with ENOSPC as on a full disk; -1 (default) is off
                           (all debug.* switches: kale_jax.train.faults)
  sample.*                 python -m experiments.sample: num_samples, chunk_size, record_every,
                           inception_path (FID/KID), ... (see experiments/sample.py), and
  sample.betas             inverse temperatures to sample, a tuple of finite numbers > 0
                           (--config.sample.betas=0.01,1,100); None: (sampler.beta,). Every beta
                           runs the same chains; beta is chosen on validation data
  sample.select_by         the metric that chooses beta: 'mmd', 'fid' or an exact metric of the
                           dataset (kale_jax.data.metric_goal); None: 'mmd' when MMD is on
                           (embedded sets), else 'fid' when Inception weights are there
  sample.num_saved         at most this many chains' base / GEBM samples go to samples.npz

Settings of this file: sphere3d, a 3-d latent, batch 128, 1000 base steps (5 energy steps each,
100 before steps 0 and 500), Adam(1e-3, 0.5, 0.999) for both networks (the paper's 1e-4 is for
images; this small problem learns faster), gradient penalty 0.1, A from 50 base batches.
Evaluation at steps 500 and 1000: MALA in latent space at beta = 1 (the model itself), 2000
chains of 300 steps after 100 steps of step-size adaptation, and MMD against 2000 held-out
samples.
"""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.parallel = "shard_map"

    config.data = ml_collections.ConfigDict()
    config.data.name = "sphere3d"
    config.data.data_dir = ""

    config.model = ml_collections.ConfigDict()
    config.model.generator = "mlp"
    config.model.energy = "mlp"
    config.model.latent_dim = 3
    # A deliberately small base (one hidden layer of 16 units) and a larger energy: the base
    # gets the support roughly right but cannot match the density on it, and the energy supplies
    # the correction, the division of labour a GEBM is built for.
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(hidden=16, depth=1, activation="relu", batch_norm=False))
    config.model.energy_kwargs = ml_collections.ConfigDict(
        dict(hidden=128, depth=3, activation="leaky_relu"))
    config.model.energy_floor = config_dict.placeholder(float)  # None: no floor
    config.model.base_objective = "kale"
    config.model.dtype = "float32"

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 1000
    config.train.batch_size = 128
    config.train.n_critic = 5
    config.train.n_critic_warmup = 100
    config.train.warmup_every = 500
    config.train.criterion = "kale"
    config.train.penalty = "gradient"
    config.train.penalty_weight = 0.1
    config.train.refine_from = config_dict.placeholder(int)  # None: no refinement phase
    config.train.refine_penalty_weight = config_dict.placeholder(float)
    config.train.soft_clip = False
    config.train.a_init_batches = 50
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.tensorboard = True
    # The plateau scheduler (kale_jax.train.plateau), off here; configs/cifar10.py turns it on.
    config.train.plateau = ml_collections.ConfigDict(dict(
        enabled=False, every=2000, lookback=11, patience=3, factor=0.8, p_value=0.1,
        num_samples=2048, metric="auto", wait_for_improvement=True))

    config.optim = ml_collections.ConfigDict()
    config.optim.energy = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, b1=0.5, b2=0.999, decay_rate=1.0, decay_steps=1000))
    config.optim.base = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, b1=0.5, b2=0.999, decay_rate=1.0, decay_steps=1000))

    config.sampler = ml_collections.ConfigDict()
    config.sampler.kernel = "mala"
    config.sampler.num_steps = 300
    config.sampler.step_size = 0.05
    config.sampler.beta = 1.0
    config.sampler.num_adaptation_steps = 100
    config.sampler.target_acceptance = config_dict.placeholder(float)
    config.sampler.num_leapfrog_steps = config_dict.placeholder(int)
    config.sampler.friction = config_dict.placeholder(float)
    config.sampler.decay_factor = config_dict.placeholder(float)  # None: constant step size
    config.sampler.decay_every = config_dict.placeholder(int)

    config.eval = ml_collections.ConfigDict()
    config.eval.num_heldout = 2000
    config.eval.num_samples = 2000

    config.debug = ml_collections.ConfigDict()
    config.debug.nan_at_step = -1
    config.debug.sleep_per_step_s = 0.0
    config.debug.full_disk_at_step = -1
    # python -m experiments.sample (kale_jax.sampling; MCMC settings come from config.sampler).
    config.sample = ml_collections.ConfigDict()
    config.sample.num_samples = 2000          # chains (GEBM samples); 50000 for a reportable FID
    config.sample.chunk_size = 500            # chains per compiled chunk (bounded memory)
    config.sample.record_every = 50           # metrics every k MCMC steps; divides num_steps
    config.sample.num_grid = 64               # images in base.png / gebm.png
    config.sample.num_gif_chains = 64         # chains in chains.gif / chains.png
    config.sample.num_data_examples = 10000   # data examples per split for FID/KID/MMD stats
    config.sample.num_kale_examples = 2000    # train / held-out examples for the KALE estimates
    # None: on for embedded sets (toys, digits, shapes).
    config.sample.mmd = config_dict.placeholder(bool)
    config.sample.mmd_num_samples = 2000      # samples per record compared by MMD
    config.sample.inception_path = "third_party/inception/pt_inception-2015-12-05.npz"
    config.sample.inception_batch_size = 50
    config.sample.kid_subsets = 100
    config.sample.kid_subset_size = 1000
    config.sample.stats_dir = ""              # '' = ~/.cache/kale_jax/statistics
    config.sample.betas = config_dict.placeholder(tuple)  # None: (config.sampler.beta,)
    config.sample.select_by = config_dict.placeholder(str)  # None: 'mmd', else 'fid' (see above)
    config.sample.num_saved = 10000           # chains whose samples go to samples.npz
    return config
