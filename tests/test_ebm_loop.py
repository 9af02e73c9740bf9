"""Tests of kale_jax.train.ebm_loop (the EBM baseline's run) and of its config checks.

Tiny settings (configs/test.py:ebm); conftest.py forces 4 CPU devices. The runs share one
module-scoped uninterrupted run and the compiled step (cached by spec).
"""
import os

import jax
import numpy as np
import pytest

from configs import ebm as ebm_config
from configs import test as test_config
from kale_jax import checkpoint as checkpoint_lib
from kale_jax import data
from kale_jax.errors import ConfigError, NonFiniteError
from kale_jax.train import Trainer, outputs, train_and_evaluate
from kale_jax.train import ebm_loop
from kale_jax.train.validate import against_checkpoint, validate

from helpers import max_abs_difference


def _config(**train):
    config = test_config.get_config("ebm")
    config.train.tensorboard = False  # TensorFlow's import alone would cost seconds
    for key, value in train.items():
        config.train[key] = value
    return config


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 uninterrupted steps on 4 devices through train_and_evaluate (the binary's call)."""
    workdir = str(tmp_path_factory.mktemp("ebm_full"))
    state = train_and_evaluate(_config(), workdir)
    return workdir, jax.device_get(state)


def test_run_writes_metrics_checkpoints_and_pictures(full_run):
    workdir, state = full_run
    assert int(state.step) == 6
    records = outputs.read_metrics(workdir)
    train_rows = [r for r in records if "loss" in r]
    eval_rows = [r for r in records if "mmd_ebm" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert [r["step"] for r in eval_rows] == [3, 6]
    for row in train_rows:
        for key in ("loss", "energy_data", "energy_neg", "reinit_fraction", "langevin_move",
                    "steps_per_sec"):
            assert np.isfinite(row[key]), (key, row)
    for key in ("mmd_ebm", "mmd_ebm_buffer", "energy_heldout", "energy_ebm",
                "ebm_share_within_3std", "ebm_modes_covered", "ebm_buffer_modes_covered"):
        assert np.isfinite(eval_rows[-1][key]), key
    checkpoints = checkpoint_lib.Checkpoints(os.path.join(workdir, "checkpoints"))
    try:
        assert checkpoints.all_steps() == [4, 6]  # keep_checkpoints = 2
        assert checkpoints.metadata()["format"] == ebm_loop.FORMAT
        saved = checkpoints.restore(6)
    finally:
        checkpoints.close()
    np.testing.assert_array_equal(saved["buffer"]["samples"], state.buffer.samples)
    assert os.path.exists(os.path.join(workdir, "samples", "scatter_0000006.png"))
    assert os.path.exists(os.path.join(workdir, "config.json"))


def test_resumed_run_reproduces_the_uninterrupted_one(full_run, tmp_path):
    """4 steps, then a second call continuing to 6 from the step-4 checkpoint: same state as the
    uninterrupted run (the draws of step t come from fold_in(key, t), data batch t is fixed)."""
    _, reference = full_run
    workdir = str(tmp_path / "run")
    ebm_loop.train_ebm(_config(num_steps=4), workdir)
    resumed = jax.device_get(ebm_loop.train_ebm(_config(), workdir))
    assert int(resumed.step) == 6
    # Same compiled step, same inputs: equal up to float round-off (none expected).
    assert max_abs_difference(reference, resumed) < 1e-6
    rows = [r for r in outputs.read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in rows] == [2, 4, 6]


def test_one_and_four_devices_train_the_same_state():
    """Random draws are made for the global batch and sliced, energies all-gathered and
    gradients pmean'd: 1 device and 4 give the same parameters, optimiser state and buffer.
    Tolerance as in test_train.py: reduction order differs by a few ulps per step. (shard_map
    only: config.parallel='pmap' wraps the same per-device step, and test_train.py checks that
    the two wrappers agree.)"""
    config = _config(num_steps=2)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        trainer = ebm_loop.EBMTrainer(config, devices)
        state = trainer.init_state()
        step_fn = trainer.step_fn()
        batches = data.train_batches(config.data, batch_size=config.train.batch_size,
                                     seed=config.seed)
        for _ in range(2):
            state, _ = step_fn(state, trainer.parallel.shard_batch(next(batches)))
        results.append(jax.device_get(trainer.parallel.unreplicate(state)))
    initial = jax.device_get(ebm_loop.EBMTrainer(config, jax.devices()[:1]).init_state())
    assert max_abs_difference(results[0], results[1]) < 1e-5
    assert max_abs_difference(initial.params, results[0].params) > 1e-4  # training moved them


def test_non_finite_parameters_stop_the_run_and_are_never_saved(tmp_path):
    workdir = str(tmp_path / "run")
    config = _config()
    config.debug.nan_at_step = 3  # step 3 runs with NaN parameters; evaluated at 3
    with pytest.raises(NonFiniteError, match=r"at step 3.*Last good checkpoint: step 2"):
        ebm_loop.train_ebm(config, workdir)
    checkpoints = checkpoint_lib.Checkpoints(os.path.join(workdir, "checkpoints"))
    try:
        assert checkpoints.all_steps() == [2]
        assert checkpoint_lib.all_finite(checkpoints.restore(2))
    finally:
        checkpoints.close()


# ----------------------------------------------------------------------------------- configs
def test_ebm_configs_are_valid_for_any_dataset():
    for name in ("ring", "grid", "sphere3d"):
        config = ebm_config.get_config(name)
        validate(config, num_devices=1)
        assert config.data.name == name and config.train.criterion == "ebm"
    digits = ebm_config.get_config("digits")
    validate(digits, num_devices=1)
    assert tuple(digits.ebm.init_box) == (-1.0, 1.0) and tuple(digits.ebm.clip) == (-1.0, 1.0)
    validate(test_config.get_config("ebm_grid"), num_devices=4)
    assert test_config.get_config("ebm_grid").data.name == "grid"


BAD_EBM_SETTINGS = [
    ("train.penalty", "gradient", "config.train.penalty='none'"),
    ("model.base_objective", "mle", "config.model.base_objective='kale'"),
    ("ebm.buffer_size", 8, ">= config.train.batch_size=16"),
    ("ebm.reinit_prob", 1.5, "[0, 1]"),
    ("ebm.init", "laplace", "('uniform', 'normal')"),
    ("ebm.init_box", (3.0, -3.0), "low < high"),
    ("ebm.clip", (1.0,), "(low, high)"),
    ("ebm.step_size", 0.0, "> 0"),
    ("ebm.noise_scale", -1.0, ">= 0"),
    ("ebm.langevin_steps", 0, ">= 1"),
    ("ebm.alpha", -0.1, ">= 0"),
    ("model.energy", "transformer", "mlp"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_EBM_SETTINGS)
def test_bad_ebm_setting_names_key_value_and_what_is_allowed(key, value, allowed):
    config = _config()
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError) as error:
        validate(config, num_devices=1)
    message = str(error.value)
    assert f"config.{key}=" in message and allowed in message
    assert "\n" not in message


def test_missing_ebm_section_and_wrong_trainer_are_one_line_errors(tmp_path):
    config = test_config.get_config()  # a GEBM config ...
    config.train.criterion = "ebm"     # ... switched to the EBM without config.ebm
    config.train.penalty = "none"
    with pytest.raises(ConfigError, match=r"config.ebm is missing.*configs/ebm.py"):
        validate(config, num_devices=1)
    with pytest.raises(ConfigError, match="energy-only"):
        Trainer(_config())  # the GEBM trainer (also what experiments.sample builds)
    with pytest.raises(ConfigError, match="train_ebm trains config.train.criterion='ebm'"):
        ebm_loop.train_ebm(test_config.get_config(), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_checkpoints_of_the_other_model_are_refused():
    """A GEBM workdir resumed as an EBM (or the reverse) fails on train.criterion, in one line,
    before any restore is attempted."""
    gebm, ebm_cfg = test_config.get_config(), _config()
    with pytest.raises(ConfigError, match=r"config.train.criterion='ebm' but .*criterion='kale'"):
        against_checkpoint(ebm_cfg, {"config": gebm.to_dict()})
    with pytest.raises(ConfigError, match=r"config.train.criterion='kale' but .*criterion='ebm'"):
        against_checkpoint(gebm, {"config": ebm_cfg.to_dict()})
    against_checkpoint(ebm_cfg, {"config": ebm_cfg.to_dict()})  # the same config passes
