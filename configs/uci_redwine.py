"""Red Wine density estimation (UCI, Wenliang et al. 2019 preprocessing): a flow base as GEBM.

Reads winequality-red.csv from --config.data.data_dir (nothing is downloaded; kale_jax/data/tabular.py says
where each file comes from). About 1599 rows, 11 features, dequantised; split 10% test, then 10% of the rest (at
most 1000) for validation, standardised with the training split's statistics.

    python -m experiments.train --config=configs/uci_redwine.py --workdir=/tmp/redwine \
        --config.data.data_dir=/data/uci [--config.model.base_objective=gebm_mle|mle]

metrics.jsonl rows from evaluation carry valid_nll / test_nll (nats per example) of the trained
model, with base_* (the flow) and gebm_* NLLs, log_z and log_z_stderr. `get_config('maf')` uses a
MAF base. The flow's dimension is the data's (model.latent_dim None).
"""
import ml_collections

from configs import tabular_default


def get_config(flow: str = "realnvp") -> ml_collections.ConfigDict:
    return tabular_default.uci_config("redwine", flow, batch_size=128, num_eval=100)
