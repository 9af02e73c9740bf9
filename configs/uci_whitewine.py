"""White Wine density estimation (UCI, Wenliang et al. 2019 preprocessing): a flow base as GEBM.

Reads winequality-white.csv from --config.data.data_dir (nothing is downloaded; kale_jax/data/tabular.py says
where each file comes from). About 4898 rows, 11 features, dequantised; split 10% test, then 10% of the rest (at
most 1000) for validation, standardised with the training split's statistics.

    python -m experiments.train --config=configs/uci_whitewine.py --workdir=/tmp/whitewine \
        --config.data.data_dir=/data/uci [--config.model.base_objective=mle]

metrics.jsonl rows from evaluation carry valid_nll / test_nll (nats per example) of the trained
model, with base_* (the flow) and gebm_* NLLs, log_z and log_z_stderr. `get_config('maf')` uses a
MAF base. The flow's dimension is the data's (model.latent_dim None).
"""
import ml_collections

from configs import tabular_default


def get_config(flow: str = "realnvp") -> ml_collections.ConfigDict:
    config = tabular_default.get_config(flow)
    config.data.name = "whitewine"
    config.data.data_dir = ""  # set on the command line: the directory holding the file(s)
    config.model.latent_dim = None  # the data dimension after preprocessing
    config.model.generator_kwargs.hidden = 128
    config.model.energy_kwargs.hidden = 128
    config.train.batch_size = 128
    config.train.num_steps = 20000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.eval.num_heldout = 400  # <= the test split
    config.eval.num_samples = 400
    return config
