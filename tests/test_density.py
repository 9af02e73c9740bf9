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
from kale_jax.train import Trainer, train_and_evaluate
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
                                   r"'mle'\)"),
])
def test_bad_base_objective_is_a_one_line_config_error(setting, value, match):
    config = _tiny()
    section, key = setting.split(".")
    config[section][key] = value
    with pytest.raises(ConfigError, match=match):
        validate(config)


def test_mle_needs_a_flow_and_a_flow_needs_the_data_dimension():
    config = _tiny("mle")
    config.model.generator = "mlp"
    config.model.generator_kwargs = {}
    with pytest.raises(ConfigError, match=r"base_objective='mle' needs a flow generator"):
        validate(config)
    config = _tiny("mle")
    config.model.latent_dim = 3
    with pytest.raises(ConfigError, match=r"latent_dim=3 must equal the data dimension 4"):
        Trainer(config, jax.devices()[:1])


def test_mle_base_steps_lower_the_training_nll_and_leave_the_energy_alone():
    config = _tiny("mle")
    config.optim.base.learning_rate = 1e-2
    trainer = Trainer(config, jax.devices()[:2])
    state = trainer.init_state()
    batches = data.train_batches(config.data, batch_size=config.train.batch_size, seed=0)
    fixed = next(data.train_batches(config.data, batch_size=config.train.batch_size, seed=0))
    base_step = trainer.base_step_fn()
    sharded = trainer.parallel.shard_batch(fixed)
    losses = []
    for _ in range(5):
        energy_before = trainer.parallel.local_copy(state).energy_params
        state, metrics = base_step(state, sharded)
        losses.append(trainer.host_metrics(metrics)["base_loss"])
        after = trainer.parallel.local_copy(state).energy_params
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(
            lambda a, b: bool(np.array_equal(a, b)), energy_before, after))
    # The reported loss is the batch NLL of the flow before each step; it falls.
    flow = trainer.spec.generator
    one = trainer.parallel.local_copy(state)
    assert losses[-1] < losses[0]
    first = -np.mean(np.asarray(flow.apply({"params": jax.device_get(
        trainer.parallel.local_copy(trainer.init_state()).generator_params)}, fixed,
        method="log_prob")))
    np.testing.assert_allclose(losses[0], first, rtol=1e-5)
    del batches, one


@pytest.mark.parametrize("objective", ["kale", "mle"])
def test_a_tiny_run_logs_the_models_nlls(tmp_path, objective):
    config = _tiny(objective)
    train_and_evaluate(config, str(tmp_path))
    row = flows_vs_mle.final_eval(str(tmp_path))
    model = "gebm" if objective == "kale" else "base"
    for split in ("valid", "test"):
        assert row[f"{split}_nll"] == row[f"{model}_{split}_nll"]
        assert np.isfinite(row[f"base_{split}_nll"]) and np.isfinite(row[f"gebm_{split}_nll"])
    assert row["log_z_stderr"] > 0
    # The GEBM's NLL is the base's minus the held-out KALE estimate with the MC log Z.
    assert abs(row["true_test_nll"] - 3.855) < 0.01


def test_flows_vs_mle_tiny_writes_the_documented_json(tmp_path):
    out = tmp_path / "flows.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.flows_vs_mle", "--tiny",
                           f"--out={out}", "--num_steps=3"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("true_test_nll", "mle_flow_test_nll", "kale_gebm_test_nll", "kale_log_z_stderr",
                "gebm_minus_mle_nats_per_dim", "target_met"):
        assert key in result
    assert result["tiny"] is True and result["dim"] == 4
    assert all(not isinstance(v, (dict, list)) for v in result.values())  # flat
    np.testing.assert_allclose(result["gebm_minus_mle_nats_per_dim"],
                               (result["kale_gebm_test_nll"] - result["mle_flow_test_nll"]) / 4)
