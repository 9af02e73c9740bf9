"""Tests of kale_jax.gebm_model (kale_jax.load): a trained GEBM from its workdir in one call.

The workdir is conftest.py's `trained_workdir`: configs/test.py (the ring, an mlp pair with
latent 4) trained in-process for 3 base steps, checkpoints at steps 2 and 3, and the final state
the training run returned, which the loaded model must reproduce exactly.
"""
import json
import os
import shutil

import jax
import numpy as np
import pytest

import kale_jax
from kale_jax import data, gebm_model
from kale_jax.errors import CheckpointError, UserError

from helpers import max_abs_difference


@pytest.fixture(scope="module")
def loaded(trained_workdir):
    workdir, _, _ = trained_workdir
    return kale_jax.load(workdir)


def test_load_restores_the_final_state(trained_workdir, loaded):
    """Variables, A and step are the training run's final state's, not a fresh initialisation."""
    workdir, config, state = trained_workdir
    assert isinstance(loaded, gebm_model.GEBM)
    assert loaded.step == 3 and loaded.workdir == os.path.abspath(workdir)
    assert loaded.latent_dim == 4 and loaded.data_shape == (2,)
    assert (json.loads(loaded.config.to_json_best_effort())
            == json.loads(config.to_json_best_effort()))
    assert loaded.config.train.num_steps == 3
    assert loaded.log_partition == float(state.log_partition)
    assert max_abs_difference(loaded.energy_variables["params"], state.energy_params) == 0
    assert max_abs_difference(loaded.generator_variables["params"], state.generator_params) == 0
    assert max_abs_difference(loaded.generator_variables["batch_stats"],
                              state.generator_state) == 0


def test_energy_and_base_are_the_networks_with_the_trained_variables(trained_workdir, loaded):
    """energy(x) / base(z) equal the Linen modules applied (inference mode) with the final
    state's variables, which differ from a fresh initialisation's (so this compares something)."""
    _, config, state = trained_workdir
    x = data.eval_examples(config.data, split="test", num_examples=32)
    energies = np.asarray(loaded.energy(x))
    assert energies.shape == (32,) and np.isfinite(energies).all()
    expected = loaded.energy_network.apply({"params": state.energy_params}, x, train=False)
    np.testing.assert_allclose(energies, np.asarray(expected), rtol=1e-6, atol=1e-6)
    fresh = loaded.energy_network.init(jax.random.key(0), x, train=False)
    assert np.max(np.abs(np.asarray(loaded.energy_network.apply(fresh, x, train=False))
                         - energies)) > 1e-4

    z = jax.random.normal(jax.random.key(1), (5, 4))
    samples = np.asarray(loaded.base(z))
    assert samples.shape == (5, 2)
    expected = loaded.generator.apply(
        {"params": state.generator_params, "batch_stats": state.generator_state}, z, train=False)
    np.testing.assert_allclose(samples, np.asarray(expected), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\), got \(3, 3\)"):
        loaded.energy(np.zeros((3, 3)))


def test_sample_shape_determinism_and_defaults(loaded):
    """Same key: same samples; another key: others. 6 chains on 4 devices (padded chunk).
    Defaults come from config.sampler (configs/test.py: ula, 4 steps)."""
    spec = loaded.sampler_spec()
    assert (spec.kernel, spec.num_steps, spec.beta) == ("ula", 4, 1.0)
    first = loaded.sample(jax.random.key(0), 6)
    assert first.shape == (6, 2) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(loaded.sample(jax.random.key(0), 6), first)
    assert not np.allclose(loaded.sample(jax.random.key(1), 6), first)
    # num_steps=0: the chains' starts pushed through the base, B(z_0): base samples, not GEBM's.
    start = loaded.sample(jax.random.key(0), 6, num_steps=0)
    assert start.shape == (6, 2) and not np.allclose(start, first)
    # Arguments override the config; the config's kernel options are dropped for another kernel.
    spec = loaded.sampler_spec(kernel="mala", num_steps=2, beta=10.0, step_size=0.01)
    assert (spec.kernel, spec.num_steps, spec.beta, spec.step_size) == ("mala", 2, 10.0, 0.01)
    with pytest.raises(ValueError, match=r"kernel=.gibbs. is not one of"):
        loaded.sample(jax.random.key(0), 4, kernel="gibbs")


def test_older_step_and_log_partition_estimate(trained_workdir, loaded):
    workdir, _, _ = trained_workdir
    older = kale_jax.load(workdir, step=2)
    assert older.step == 2
    assert max_abs_difference(older.energy_variables, loaded.energy_variables) > 0
    # A is trained towards log E_G[exp(-E)]; after 3 base steps it is only near the estimate,
    # so only finiteness and the estimator's determinism are checked here.
    estimate = loaded.estimate_log_partition(jax.random.key(0), 512)
    assert np.isfinite(estimate)
    assert estimate == loaded.estimate_log_partition(jax.random.key(0), 512)


def _one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and isinstance(error, UserError)
    return message


def test_errors_are_one_line_and_name_the_path(trained_workdir, tmp_path):
    workdir, _, _ = trained_workdir
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(str(missing))
    assert f"no workdir {missing}" in _one_line(raised.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(str(empty))
    assert f"{empty / 'config.json'} is missing" in _one_line(raised.value)

    # config.json but only an unfinished save (orbax's temporary directory): nothing committed.
    partial = tmp_path / "partial"
    (partial / "checkpoints" / "2.orbax-checkpoint-tmp-1700000000").mkdir(parents=True)
    shutil.copy(os.path.join(workdir, "config.json"), partial / "config.json")
    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(str(partial))
    assert f"no committed checkpoint in {partial / 'checkpoints'}" in _one_line(raised.value)
    assert (partial / "checkpoints" / "2.orbax-checkpoint-tmp-1700000000").is_dir()  # read-only

    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(workdir, step=1)
    assert "step=1 is not a committed checkpoint" in _one_line(raised.value)
    assert "saved steps: [2, 3]" in str(raised.value)

    ebm = tmp_path / "ebm"
    ebm.mkdir()
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    saved["train"]["criterion"] = "ebm"
    (ebm / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(str(ebm))
    assert "holds an energy-only EBM" in _one_line(raised.value)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as raised:
        kale_jax.load(str(tmp_path / "bad"))
    assert "cannot be read as JSON" in _one_line(raised.value)
