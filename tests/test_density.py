"""Tests of training flow bases (model.base_objective 'kale' | 'mle') and of the likelihood
metrics they log (kale_jax.train.density): config checks, the MLE base step, and tiny end-to-end
runs on the embedded Gaussian mixture."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import flows_vs_mle
from kale_jax import data
from kale_jax.errors import ConfigError
from kale_jax.train import Trainer
from kale_jax.train.validate import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(objective="kale"):
    config = flows_vs_mle.make_config(objective, "realnvp", tiny=True, seed=0, num_steps=4)
    config.train.batch_size = 16
    config.train.n_critic = 1
    config.train.n_critic_warmup = 2
    config.train.log_every = 2
    config.eval.num_heldout = 16
    config.eval.num_samples = 16
    config.eval.nll_base_samples = 1500
    return config


@pytest.mark.parametrize("setting,value,match", [
    ("model.base_objective", "ml", r"config.model.base_objective='ml' is not one of \('kale', "
                                   r"'mle', 'gebm_mle'\)"),
])
def test_bad_base_objective_is_a_one_line_config_error(setting, value, match):
    config = _tiny()
    section, key = setting.split(".")
    config[section][key] = value
    with pytest.raises(ConfigError, match=match):
        validate(config)


@pytest.mark.parametrize("objective", ["mle", "gebm_mle"])
def test_density_objectives_need_a_flow_and_the_kale_criterion(objective):
    config = _tiny(objective)
    config.model.generator = "mlp"
    config.model.generator_kwargs = {}
    with pytest.raises(ConfigError, match=rf"base_objective='{objective}' needs a flow generator "
                                          r"\(config.model.generator in \('realnvp', 'maf'\)\), "
                                          r"got 'mlp'$"):
        validate(config)
    config = _tiny(objective)
    config.train.criterion = "logistic"
    with pytest.raises(ConfigError, match=rf"base_objective='{objective}' trains the energy with "
                                          r"KALE; set config.train.criterion='kale'"):
        validate(config)


def test_a_flow_needs_the_data_dimension():
    config = _tiny("mle")
    config.model.latent_dim = 3
    with pytest.raises(ConfigError, match=r"latent_dim=3 must equal the data dimension 4"):
        Trainer(config, jax.devices()[:1])


def test_mle_base_steps_lower_the_training_nll_and_leave_the_energy_alone():
    config = _tiny("mle")
    config.optim.base.learning_rate = 1e-2
    trainer = Trainer(config, jax.devices()[:2])
    state = trainer.init_state()
    initial = jax.device_get(trainer.parallel.local_copy(state))  # states are donated
    fixed = next(data.train_batches(config.data, batch_size=config.train.batch_size, seed=0))
    base_step = trainer.base_step_fn()
    sharded = trainer.parallel.shard_batch(fixed)
    losses = []
    for _ in range(5):
        state, metrics = base_step(state, sharded)
        losses.append(trainer.host_metrics(metrics)["base_loss"])
    final = jax.device_get(trainer.parallel.local_copy(state))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(np.array_equal(a, b)), initial.energy_params, final.energy_params))
    # The reported loss is the batch NLL of the flow before each step (2 devices, one global
    # batch); it falls.
    flow = trainer.spec.generator
    first = -np.mean(np.asarray(flow.apply({"params": initial.generator_params}, fixed,
                                           method="log_prob")))
    np.testing.assert_allclose(losses[0], first, rtol=1e-5)
    assert losses[-1] < losses[0]


def test_flows_vs_mle_tiny_trains_all_objectives_and_writes_the_documented_json(tmp_path):
    """Runs the binary (three objectives, tiny): each run's metrics carry the model's NLLs."""
    out = tmp_path / "flows.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.flows_vs_mle", "--tiny",
                           f"--out={out}", "--num_steps=3", f"--workdir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for objective, model in (("kale", "gebm"), ("mle", "base"), ("gebm_mle", "gebm")):
        row = flows_vs_mle.final_eval(str(tmp_path / objective))
        for split in ("valid", "test"):
            assert row[f"{split}_nll"] == row[f"{model}_{split}_nll"]
            assert np.isfinite(row[f"base_{split}_nll"]) and np.isfinite(row[f"gebm_{split}_nll"])
        assert row["log_z_stderr"] > 0
        assert abs(row["true_test_nll"] - 3.855) < 0.01
    result = json.loads(out.read_text())
    for key in ("true_test_nll", "mle_flow_test_nll", "kale_gebm_test_nll", "kale_log_z_stderr",
                "gebm_minus_mle_nats_per_dim", "target_met", "gebm_mle_test_nll",
                "gebm_mle_log_z_stderr", "gebm_mle_minus_mle_nats_per_dim", "gebm_mle_target_met",
                "gebm_mle_base_ess_median", "gebm_mle_error", "gebm_mle_seconds"):
        assert key in result
    assert result["tiny"] is True and result["dim"] == 4
    assert all(not isinstance(v, (dict, list)) for v in result.values())  # flat
    np.testing.assert_allclose(result["gebm_minus_mle_nats_per_dim"],
                               (result["kale_gebm_test_nll"] - result["mle_flow_test_nll"]) / 4)
    np.testing.assert_allclose(result["gebm_mle_minus_mle_nats_per_dim"],
                               (result["gebm_mle_test_nll"] - result["mle_flow_test_nll"]) / 4)
    assert result["gebm_mle_test_nll"] == flows_vs_mle.final_eval(
        str(tmp_path / "gebm_mle"))["gebm_test_nll"]
    assert 0.0 < result["gebm_mle_base_ess_min"] <= result["gebm_mle_base_ess_median"] <= 1.0
    assert result["gebm_mle_minus_mle_se"] > 0 and result["mle_gebm_minus_mle_se"] > 0
