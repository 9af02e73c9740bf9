"""MiniBooNE density estimation (UCI, Wenliang et al. 2019 preprocessing): a flow base as GEBM.

Reads miniboone/data.npy from --config.data.data_dir (nothing is downloaded; kale_jax/data/tabular.py says
where each file comes from). About 36488 rows, 43 features; split 10% test, then 10% of the rest (at
most 1000) for validation, standardised with the training split's statistics.

    python -m experiments.train --config=configs/uci_miniboone.py --workdir=/tmp/miniboone \
        --config.data.data_dir=/data/uci [--config.model.base_objective=gebm_mle|mle]

metrics.jsonl rows from evaluation carry valid_nll / test_nll (nats per example) of the trained
model, with base_* (the flow) and gebm_* NLLs, log_z and log_z_stderr. `get_config('maf')` uses a
MAF base. The flow's dimension is the data's (model.latent_dim None).
"""
import ml_collections

from configs import tabular_default


def get_config(flow: str = "realnvp") -> ml_collections.ConfigDict:
    return tabular_default.uci_config("miniboone", flow, batch_size=256, num_eval=1000)
