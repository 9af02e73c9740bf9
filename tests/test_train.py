"""Tests of kale_jax.train: the schedule, device-count independence, and exact resume.

conftest.py forces 4 CPU devices. Networks are tiny (configs/test.py) to keep compile time low.
"""
import os
import re

import jax
import numpy as np
import pytest

from configs import default as default_config
from configs import test as test_config
from kale_jax import data
from kale_jax.train import Trainer, TrainState, optim, outputs, schedule, train_and_evaluate

from helpers import max_abs_difference


# ------------------------------------------------------------------------------------ schedule
def test_schedule_is_the_papers_rule():
    """n_critic_warmup (100) energy steps before base step 0 and every 500th, else n_critic (5)."""
    config = default_config.get_config()
    config.train.n_critic, config.train.n_critic_warmup, config.train.warmup_every = 5, 100, 500
    warm = {0, 500, 1000, 1500}
    for t in range(1600):
        assert schedule.energy_steps_before(t, config) == (100 if t in warm else 5), t


def test_energy_steps_until_is_the_running_sum():
    config = test_config.get_config()
    config.train.n_critic, config.train.n_critic_warmup, config.train.warmup_every = 2, 7, 4
    total = 0
    for t in range(30):
        assert schedule.energy_steps_until(t, config) == total, t
        total += schedule.energy_steps_before(t, config)
    with pytest.raises(ValueError, match="base_step"):
        schedule.energy_steps_before(-1, config)


# ------------------------------------------------------------------------ device independence
def _train_steps(devices, parallel, num_base_steps):
    """num_base_steps iterations of configs/test.py (ring; its generator has BatchNorm)."""
    config = test_config.get_config()
    config.parallel = parallel
    assert config.model.generator_kwargs.batch_norm
    trainer = Trainer(config, devices)
    state = trainer.init_state()
    initial = jax.device_get(trainer.parallel.unreplicate(state))
    batches = data.train_batches(config.data, batch_size=config.train.batch_size,
                                 seed=config.seed)
    for t in range(num_base_steps):
        state, _ = trainer.run_iteration(state, t, batches)
    return initial, jax.device_get(trainer.parallel.unreplicate(state))


def test_refinement_phase_freezes_the_base_and_trains_the_energy():
    """From train.refine_from on, iterations keep the schedule's energy steps (at the refinement
    penalty weight) and leave the generator untouched: its parameters after the last iteration
    equal those at refine_from exactly, while the energy's move."""
    config = test_config.get_config()
    config.train.refine_from, config.train.refine_penalty_weight = 2, 0.01
    trainer = Trainer(config, jax.devices()[:1])
    state = trainer.init_state()
    batches = data.train_batches(config.data, batch_size=config.train.batch_size,
                                 seed=config.seed)
    snapshots = []
    for t in range(4):
        state, metrics = trainer.run_iteration(state, t, batches)
        snapshots.append(jax.device_get(trainer.parallel.unreplicate(state)))
    assert [trainer.refining(t) for t in range(4)] == [False, False, True, True]
    assert "base_loss" not in trainer.host_metrics(metrics)  # the last iteration's base step
    moved = max_abs_difference(snapshots[0].generator_params, snapshots[1].generator_params)
    assert moved > 0
    assert max_abs_difference(snapshots[1].generator_params, snapshots[3].generator_params) == 0
    assert max_abs_difference(snapshots[1].energy_params, snapshots[3].energy_params) > 0
    assert int(snapshots[3].base_step) == 4
    assert int(snapshots[3].energy_step) == schedule.energy_steps_until(4, config)


@pytest.fixture(scope="module")
def one_device_run():
    return _train_steps(jax.devices()[:1], "shard_map", num_base_steps=3)


@pytest.mark.parametrize("parallel", ["shard_map", "pmap"])
def test_one_and_four_devices_train_the_same_parameters(one_device_run, parallel):
    """Same parameters, BatchNorm statistics, A and optimiser states on 1 and 4 devices.

    Tolerance: the only difference is the order of float32 reductions (per-device partial sums
    then a cross-device mean), a few ulps per step; 1e-5 absolute on values of order 1 leaves
    room for 3 steps of that, while a real difference (unsynchronised BatchNorm, a device-
    dependent random draw, a gradient scaled by the device count) moves values by >= 1e-3.
    """
    assert len(jax.devices()) == 4
    initial, reference = one_device_run
    _, result = _train_steps(jax.devices(), parallel, num_base_steps=3)
    assert max_abs_difference(reference, result) < 1e-5
    # Training moved the parameters and the generator's BatchNorm statistics, so the equality
    # above compares something.
    assert max_abs_difference(initial.generator_params, reference.generator_params) > 1e-3
    assert max_abs_difference(initial.generator_state, reference.generator_state) > 1e-3
    assert int(result.base_step) == 3
    assert int(result.energy_step) == schedule.energy_steps_until(3, test_config.get_config())


# ---------------------------------------------------------------------------------- resume
def _config(num_steps):
    config = test_config.get_config()
    config.train.num_steps = num_steps
    config.train.tensorboard = False
    return config


def test_exact_resume(tmp_path):
    """2N steps in one run == N steps, a restart from the checkpoint, and N more (bitwise).

    N = 3 with warmup_every = 4: the second half crosses a warm-up round (base step 4), so both
    compiled iteration variants and the data iterator's start_step are exercised.
    """
    n = 3
    straight = train_and_evaluate(_config(2 * n), str(tmp_path / "straight"))
    train_and_evaluate(_config(n), str(tmp_path / "resumed"))
    resumed = train_and_evaluate(_config(2 * n), str(tmp_path / "resumed"))
    assert isinstance(resumed, TrainState)
    assert int(resumed.base_step) == 2 * n
    flat_straight = jax.tree_util.tree_leaves(jax.device_get(straight))
    flat_resumed = jax.tree_util.tree_leaves(jax.device_get(resumed))
    assert len(flat_straight) == len(flat_resumed)
    for a, b in zip(flat_straight, flat_resumed):
        np.testing.assert_array_equal(a, b)
    # The resumed run's metrics read as one run: each training log step once, in order
    # (log_every = 2, and the first run also logged its last step, 3).
    records = outputs.read_metrics(str(tmp_path / "resumed"))
    logged = [r["step"] for r in records if "energy_loss" in r]
    assert logged == [2, 3, 4, 6]
    final = [r for r in records if "mmd_gebm" in r][-1]
    assert final["step"] == 2 * n and np.isfinite(final["mmd_base"])
    assert 0.0 < final["mmd_noise"] < 0.1  # true-vs-true MMD² spread, recorded with the MMDs
    assert os.path.isdir(tmp_path / "resumed" / "checkpoints" / str(2 * n))
    # A run with different networks must not resume from these checkpoints.
    other = _config(2 * n + 1)
    other.model.energy_kwargs.hidden = 8
    with pytest.raises(ValueError, match=r"config.model.energy_kwargs.hidden=8 but the "
                       r"checkpoint .* written with config.model.energy_kwargs.hidden=16; "
                       r".* new --workdir"):
        train_and_evaluate(other, str(tmp_path / "resumed"))


def test_non_finite_training_stops_without_saving(tmp_path):
    """Data of scale 1e38 overflows the energies to inf/NaN in the first steps (same compiled
    steps as the other tests: only the data changes). The run must stop with a message naming
    the step and the last good checkpoint, and leave no checkpoint of the bad state."""
    config = _config(6)
    config.data.std = 1e38
    with pytest.raises(FloatingPointError,
                       match=r"non-finite .* at base step 2.*Last good checkpoint: none"):
        train_and_evaluate(config, str(tmp_path / "at_log"))  # log_every = 2: the loss check
    config.train.log_every = 1000  # now the parameter check before the save at step 2 fires
    with pytest.raises(FloatingPointError,
                       match=r"non-finite parameters at base step 2; not saved.*none"):
        train_and_evaluate(config, str(tmp_path / "at_save"))
    for run in ("at_log", "at_save"):
        assert not [d for d in os.listdir(tmp_path / run / "checkpoints") if d.isdigit()]


def test_gan_baseline_trains_the_energy_network_and_leaves_a_alone():
    """criterion 'logistic' uses the same networks; A gets no gradient, so Adam leaves it as the
    Monte-Carlo initialisation set it (bit for bit), while the energy's parameters move."""
    config = test_config.get_config()
    config.train.criterion = "logistic"
    config.train.penalty = "none"
    trainer = Trainer(config, jax.devices()[:1])
    state = trainer.init_state()
    initial = jax.device_get(trainer.parallel.local_copy(state))
    batches = data.train_batches(config.data, batch_size=config.train.batch_size,
                                 seed=config.seed)
    for t in range(2):
        state, metrics = trainer.run_iteration(state, t, batches)
    final = jax.device_get(trainer.parallel.local_copy(state))
    scalars = trainer.host_metrics(metrics)
    assert final.log_partition == initial.log_partition != 0.0
    assert max_abs_difference(initial.energy_params, final.energy_params) > 1e-4
    assert max_abs_difference(initial.generator_params, final.generator_params) > 1e-4
    # The logistic losses are sums of softplus terms: positive.
    assert scalars["energy_loss"] > 0 and scalars["base_loss"] > 0


def test_learning_rate_schedule_decays_exponentially():
    config = test_config.get_config()
    config.optim.energy.learning_rate, config.optim.energy.decay_rate = 1e-3, 0.5
    config.optim.energy.decay_steps = 100
    schedule_fn = optim.learning_rate_schedule(optim.energy_spec(config))
    np.testing.assert_allclose([schedule_fn(0), schedule_fn(100), schedule_fn(200)],
                               [1e-3, 5e-4, 2.5e-4], rtol=1e-6)
    constant = optim.learning_rate_schedule(optim.base_spec(config))  # decay_rate 1.0
    assert float(constant(10 ** 6)) == config.optim.base.learning_rate


# ------------------------------------------------------------------------------------ outputs
def test_image_grid_tiles_row_major_and_maps_to_bytes():
    images = np.full((5, 2, 3, 1), -1.0, np.float32)
    for i in range(5):
        images[i, 0, 0, 0] = i / 4.0  # one marked pixel per image
    grid = outputs.image_grid(images, columns=2)
    assert grid.shape == (3 * 2, 2 * 3, 1) and grid.dtype == np.uint8
    for i in range(5):
        row, col = divmod(i, 2)
        assert grid[row * 2, col * 3, 0] == round((i / 4.0 + 1.0) * 127.5)
    assert grid[4, 3, 0] == 0  # the missing sixth cell is black (-1)


def test_metric_writer_truncates_steps_after_a_checkpoint(tmp_path):
    writer = outputs.MetricWriter(str(tmp_path), tensorboard=False)
    for step in (2, 4, 6):
        writer.write(step, {"loss": np.float32(step / 2)})
    writer.truncate_after(4)  # a run resumed from step 4 will log step 6 again
    writer.write(6, {"loss": 7.0, "bad": float("nan")})
    records = outputs.read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[1]["loss"] == 2.0 and records[2]["loss"] == 7.0
    assert records[2]["bad"] == "nan"  # JSON has no NaN; the line stays parseable


def test_progress_line_reports_rate_and_eta():
    progress = outputs.Progress(start_step=0, num_steps=1000)
    progress._last_time -= 10.0  # pretend 10 s passed
    text, rate = progress.line(100, {"loss": 0.5})
    assert 9.0 < rate <= 10.0  # 100 steps in a little over 10 s
    assert "step 100/1000 (10.0%)" in text and "loss=0.5" in text
    assert re.search(r"ETA 1m3\d", text)  # 900 steps at ~10 steps/s: about 90 s
