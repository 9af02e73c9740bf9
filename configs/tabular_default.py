"""Density estimation on the embedded 'gaussian_mixture' (4-D, exact density known), flow base.

A RealNVP base (6 affine couplings) and an MLP energy, trained with KALE
(model.base_objective='kale': energy steps and KALE base steps, the GEBM is the model), or the
same flow by maximum likelihood (--config.model.base_objective=mle: the flow is the model; the
energy is still trained on top of it with the same schedule, so both runs cost the same), or the
GEBM by maximum likelihood (--config.model.base_objective=gebm_mle: KALE energy steps and base
steps on -log g(x) + log mean exp(-E(B(z))), which together ascend the GEBM's log-likelihood; the
GEBM is the model).
Evaluation writes valid_nll / test_nll (nats per example) of the trained model, the flow's and
the GEBM's NLLs, the Monte-Carlo log Z with its standard error and the true density's test NLL
(true_test_nll) to WORKDIR/metrics.jsonl.

    python -m experiments.train --config=configs/tabular_default.py --workdir=/tmp/tab_kale
    python -m experiments.train --config=configs/tabular_default.py --workdir=/tmp/tab_mle \
        --config.model.base_objective=mle
    python -m experiments.train --config=configs/tabular_default.py --workdir=/tmp/tab_gebm_mle \
        --config.model.base_objective=gebm_mle
    python -m experiments.flows_vs_mle --out=experiments/results/flows.json   # all three + JSON

`get_config('maf')` swaps the base for a MAF (5 MADE blocks).
"""
import ml_collections

from configs import default


def get_config(flow: str = "realnvp") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = "gaussian_mixture"
    config.data.data_dir = ""
    config.data.split_seed = 0

    flow = flow or "realnvp"
    config.model.generator = flow
    config.model.base_objective = "kale"
    config.model.latent_dim = 4  # a flow's latent dimension is the data dimension
    layers = 6 if flow == "realnvp" else 5
    config.model.generator_kwargs = ml_collections.ConfigDict(
        dict(num_layers=layers, hidden=64, depth=2, activation="relu"))
    config.model.energy_kwargs = ml_collections.ConfigDict(
        dict(hidden=64, depth=2, activation="swish"))

    # The reference's energy floor (docs/design.md), at -5: KALE runs of this flow without it
    # diverged to NaN within 500 base steps.
    config.model.energy_floor = -5.0

    config.train.num_steps = 2000
    config.train.batch_size = 256
    config.train.n_critic = 5
    config.train.n_critic_warmup = 100
    config.train.warmup_every = 1000
    config.train.penalty = "gradient"
    config.train.penalty_weight = 0.1
    config.train.a_init_batches = 20
    config.train.log_every = 250
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.tensorboard = False

    for name in ("energy", "base"):
        config.optim[name].learning_rate = 1e-3
        config.optim[name].b1 = 0.5
        config.optim[name].decay_rate = 0.1
        config.optim[name].decay_steps = 20000

    config.sampler.kernel = "mala"
    config.sampler.num_steps = 100
    config.sampler.num_adaptation_steps = 50
    config.eval.num_heldout = 1000
    config.eval.num_samples = 1000
    config.eval.nll_base_samples = 100_000
    return config


def uci_config(dataset: str, flow: str, *, batch_size: int,
               num_eval: int) -> ml_collections.ConfigDict:
    """The settings configs/uci_*.py share: a wider flow and energy on a data set read from files.

    Args:
      dataset: config.data.name, one of the tabular sets of kale_jax/data/tabular.py.
      flow: 'realnvp' or 'maf'.
      batch_size: config.train.batch_size.
      num_eval: held-out examples and samples at evaluation; at most the test split's size.
    """
    config = get_config(flow)
    config.data.name = dataset
    config.data.data_dir = ""  # set on the command line: the directory holding the file(s)
    config.model.latent_dim = None  # the data dimension after preprocessing
    config.model.generator_kwargs.hidden = 128
    config.model.energy_kwargs.hidden = 128
    config.train.batch_size = batch_size
    config.train.num_steps = 20000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.eval.num_heldout = num_eval
    config.eval.num_samples = num_eval
    return config
