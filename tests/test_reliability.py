"""Reliability (issue 9): bad input, faults and preemption, with nothing lost.

Every case is a real subprocess of `python -m experiments.train` (configs/test.py, the toy ring)
or a real file operation; nothing of ours is mocked. Subprocesses see 4 forced CPU devices and
share a persistent XLA compilation cache in a module temporary directory, so only the first run
compiles.

The preemption cases form one chain on one workdir (module fixtures, each runnable alone):
SIGTERM -> resume, SIGKILL while a checkpoint is being written -> resume from the previous
complete one (SIGINT stops that run) -> a file of the latest checkpoint truncated on disk -> the
run reports it, uses the one before and finishes. Runs use config.debug.sleep_per_step_s so a
signal lands mid-run on any machine, and eval_every past the run so no evaluation is compiled
until the last run finishes.

Cost: about 2-3 minutes on 2 busy cores, mostly the subprocesses (the first one compiles).
"""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import test as test_config
from kale_jax import checkpoint
from kale_jax.data import files
from kale_jax.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from kale_jax.train import outputs, validate as validate_lib
from kale_jax.train.validate import validate

from helpers import one_error_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = ".orbax-checkpoint-tmp"
# No TensorBoard (TensorFlow import), no evaluation before the end, a checkpoint every step.
FAST = ("--config.train.tensorboard=False", "--config.train.eval_every=100000",
        "--config.train.log_every=1", "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=3")
SLOW_STEPS = ("--config.train.num_steps=100000", "--config.debug.sleep_per_step_s=0.05")


# ------------------------------------------------------------------------------------ helpers
def _command(workdir, *overrides, config="configs/test.py"):
    return [sys.executable, "-m", "experiments.train", f"--config={config}",
            f"--workdir={workdir}", *overrides]


def _run(env, workdir, *overrides, config="configs/test.py"):
    """Runs the binary to its end: (exit status, stderr)."""
    result = subprocess.run(_command(workdir, *overrides, config=config), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stderr


class _Background:
    """The binary running in the background, its stderr going to a file we can read meanwhile."""

    def __init__(self, env, workdir, *overrides):
        self.workdir = workdir
        self.checkpoints = os.path.join(workdir, "checkpoints")
        os.makedirs(os.path.dirname(workdir), exist_ok=True)
        self.log_path = workdir + ".log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(_command(workdir, *overrides), cwd=REPO, env=env,
                                        stdout=subprocess.DEVNULL, stderr=self._log, text=True)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, condition, what: str, timeout: float = 300, poll: float = 0.002):
        """Polls `condition()` (fast: a save is visible for a few hundred ms) until it is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"exited ({self.process.returncode}) before {what}:\n"
                                     + self.log()[-3000:])
            time.sleep(poll)
        self.kill()
        raise AssertionError(f"no {what} after {timeout} s:\n" + self.log()[-3000:])

    def signal_and_wait(self, signum, timeout: float = 300) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _listing(directory):
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _complete_steps(directory):
    return sorted(int(n) for n in _listing(directory) if n.isdigit())


def _snapshot(directory):
    """{relative path: (size, mtime_ns)} of every file under `directory`."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return out


def _restore_and_check(directory, step):
    """Restores step `step` (as the sampling tool would, without a target): finite, at `step`."""
    ckpt = checkpoint.Checkpoints(directory)
    try:
        state = ckpt.restore(step)
    finally:
        ckpt.close()
    assert int(state["base_step"]) == step
    assert checkpoint.all_finite(state)
    return state


# ----------------------------------------------------------- preemption and kills (one chain)
@pytest.fixture(scope="module")
def preempted(env, tmp_path_factory):
    """SIGTERM once the first checkpoint is on disk: (workdir, exit status, log, stop step)."""
    workdir = str(tmp_path_factory.mktemp("chain") / "run")
    run = _Background(env, workdir, *FAST, *SLOW_STEPS)
    run.wait_for(lambda: _complete_steps(run.checkpoints), "first checkpoint")
    status = run.signal_and_wait(signal.SIGTERM)
    log = run.log()
    stopped = re.search(r"Stopped by signal at step (\d+)", log)
    return workdir, status, log, int(stopped.group(1)) if stopped else None


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(preempted):
    workdir, status, log, stop_step = preempted
    assert status == 0, log[-3000:]
    assert stop_step is not None and stop_step >= 1, log[-3000:]
    checkpoints = os.path.join(workdir, "checkpoints")
    assert _complete_steps(checkpoints)[-1] == stop_step
    assert not [n for n in _listing(checkpoints) if TMP_MARK in n]  # the save completed
    _restore_and_check(checkpoints, stop_step)


@pytest.fixture(scope="module")
def killed(env, preempted):
    """Resumes the preempted run and SIGKILLs it while a later checkpoint is being written.

    Returns (workdir, exit status, log, the step being saved, complete steps at the kill, a
    snapshot of those complete steps' files).
    """
    workdir, _, _, stop_step = preempted
    run = _Background(env, workdir, *FAST, *SLOW_STEPS)
    checkpoints = run.checkpoints

    def saving():  # a step beyond the resumed one is being written (orbax's temporary directory)
        for name in _listing(checkpoints):
            step = name.split(".")[0]
            if TMP_MARK in name and step.isdigit() and int(step) >= stop_step + 2:
                return int(step)
        return None

    saving_step = run.wait_for(saving, "a checkpoint being written")
    status = run.signal_and_wait(signal.SIGKILL)
    complete = _complete_steps(checkpoints)
    files_then = {s: _snapshot(os.path.join(checkpoints, str(s))) for s in complete}
    return workdir, status, run.log(), saving_step, complete, files_then


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_usable(preempted, killed):
    _, _, _, stop_step = preempted
    workdir, status, log, saving_step, complete, _ = killed
    assert status == -signal.SIGKILL
    assert f"Resuming from step {stop_step} " in log  # the SIGTERM checkpoint was resumable
    checkpoints = os.path.join(workdir, "checkpoints")
    # Killed mid-save: the half-written step exists only as orbax's temporary directory ...
    assert any(name.startswith(f"{saving_step}{TMP_MARK}") for name in _listing(checkpoints))
    assert saving_step not in complete
    # ... and the newest complete step is the one before it, whole and finite.
    assert complete[-1] == saving_step - 1
    ckpt = checkpoint.Checkpoints(checkpoints)  # opening it deletes the temporary directory
    assert ckpt.latest_step() == saving_step - 1
    ckpt.close()
    _restore_and_check(checkpoints, saving_step - 1)


@pytest.fixture(scope="module")
def interrupted(env, killed):
    """Resumes the killed run and stops it with SIGINT after two new checkpoints."""
    workdir, _, _, _, complete, _ = killed
    run = _Background(env, workdir, *FAST, *SLOW_STEPS)
    run.wait_for(lambda: max(_complete_steps(run.checkpoints) or [0]) >= complete[-1] + 2,
                 "two new checkpoints")
    status = run.signal_and_wait(signal.SIGINT)
    log = run.log()
    stopped = re.search(r"Stopped by signal at step (\d+)", log)
    return workdir, status, log, int(stopped.group(1)) if stopped else None


def test_the_run_after_a_sigkill_resumes_and_sigint_saves(killed, interrupted):
    _, _, _, saving_step, complete, files_then = killed
    workdir, status, log, stop_step = interrupted
    assert status == 0, log[-3000:]
    assert f"Resuming from step {complete[-1]} " in log
    checkpoints = os.path.join(workdir, "checkpoints")
    assert not [n for n in _listing(checkpoints) if TMP_MARK in n]  # the killed save is gone
    assert _complete_steps(checkpoints)[-1] == stop_step >= saving_step
    _restore_and_check(checkpoints, stop_step)
    # Steps that survived the kill and were kept were not rewritten by the resumed run.
    for step, snapshot in files_then.items():
        if step in _complete_steps(checkpoints):
            assert _snapshot(os.path.join(checkpoints, str(step))) == snapshot


def _truncate_array_files(step_dir, new_size=lambda size: size // 2):
    """Cuts every array-data file (the 'd/' directories of orbax's OCDBT store) of a checkpoint
    step. All of them: a step holds equal-sized copies at two levels and which one a restore
    reads is orbax's business, so damaging one picked by size did not always damage the step."""
    paths = glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
    assert paths, f"no array data files under {step_dir}"
    for path in paths:
        with open(path, "r+b") as f:
            f.truncate(new_size(os.path.getsize(path)))


def test_a_truncated_latest_checkpoint_is_reported_and_the_previous_one_used(env, interrupted):
    workdir, _, _, stop_step = interrupted
    checkpoints = os.path.join(workdir, "checkpoints")
    previous = _complete_steps(checkpoints)[-2]
    _truncate_array_files(os.path.join(checkpoints, str(stop_step)))
    kept_files = _snapshot(os.path.join(checkpoints, str(previous)))

    num_steps = stop_step + 1
    status, log = _run(env, workdir, *FAST, f"--config.train.num_steps={num_steps}")
    assert status == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1, log[-3000:]
    assert (f"Checkpoint step {stop_step} in {checkpoints} is unreadable" in warnings[0]
            and f"using step {previous}." in warnings[0])
    assert f"Resuming from step {previous} " in log
    assert f"Finished {num_steps} base steps" in log
    # The damaged step was set aside (kept for inspection), the previous one read unchanged.
    assert os.path.isdir(os.path.join(checkpoints + checkpoint.UNREADABLE_SUFFIX, str(stop_step)))
    assert _snapshot(os.path.join(checkpoints, str(previous))) == kept_files
    assert _complete_steps(checkpoints)[-1] == num_steps
    _restore_and_check(checkpoints, stop_step)  # written again from the previous step
    records = outputs.read_metrics(workdir)
    logged = [r["step"] for r in records if "energy_loss" in r]
    assert logged == list(range(1, num_steps + 1))  # each step once, in order, over four runs
    assert records[-1]["step"] == num_steps and np.isfinite(records[-1]["mmd_gebm"])


def test_resuming_with_another_latent_size_is_refused_in_one_line(env, interrupted):
    workdir, _, _, _ = interrupted
    checkpoints = os.path.join(workdir, "checkpoints")
    before = _snapshot(workdir)
    status, log = _run(env, workdir, *FAST, "--config.model.latent_dim=5")
    assert status == 2
    line = one_error_line(log)
    assert (f"config.model.latent_dim=5 but the checkpoint in {checkpoints} was written with "
            "config.model.latent_dim=4; use the checkpoint's value or a new --workdir") in line
    # Checkpoints, config.json, metrics.jsonl untouched (the run held, then released, the lock).
    after = _snapshot(workdir)
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}
    assert os.path.getsize(os.path.join(workdir, ".lock")) == 0


# ---------------------------------------------------------------------------- non-finite guard
def test_a_forced_nan_stops_the_run_and_keeps_the_last_good_checkpoint(env, tmp_path):
    workdir = str(tmp_path / "nan")
    checkpoints = os.path.join(workdir, "checkpoints")
    status, log = _run(env, workdir, *FAST, "--config.train.num_steps=6",
                       "--config.debug.nan_at_step=3")
    assert status == NonFiniteError.exit_status == 3
    line = one_error_line(log)
    assert re.fullmatch(r"error: non-finite \[.*'energy_loss'.*\] at base step 3\. Last good "
                        rf"checkpoint: step 2 in {re.escape(checkpoints)}; rerunning with this "
                        r"--workdir resumes from it \(lower optim.*", line), line
    assert _complete_steps(checkpoints) == [1, 2]  # nothing of step 3 was saved
    assert not [n for n in _listing(checkpoints) if TMP_MARK in n]
    _restore_and_check(checkpoints, 2)  # the last good checkpoint is whole and finite


# ------------------------------------------------------------------------- bad input, binaries
def test_bad_config_value_one_line_exit_2_nothing_written(env, tmp_path):
    workdir = tmp_path / "run"
    status, log = _run(env, str(workdir), "--config.train.batch_size=18")
    assert status == 2
    assert one_error_line(log) == ("error: config.train.batch_size=18 does not divide by the 4 "
                                    "devices; use a multiple of 4")
    assert not workdir.exists()


def test_workdir_under_a_file_one_line_exit_2(env, tmp_path):
    # (A path under a regular file cannot be a directory even for root, unlike chmod.)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    status, log = _run(env, str(blocker / "run"))
    assert status == 2
    assert one_error_line(log) == (f"error: --workdir={blocker / 'run'} is under {blocker}, "
                                    "which is not a directory; pass a directory path")
    assert blocker.read_text() == "not a directory"


def test_missing_dataset_one_line_exit_2_nothing_written(env, tmp_path):
    """A tfds set that was never prepared (an empty data_dir): the line says how to prepare it."""
    empty = tmp_path / "tfds"
    empty.mkdir()
    workdir = tmp_path / "run"
    status, log = _run(env, str(workdir), "--config.data.name=cifar10",
                       f"--config.data.data_dir={empty}")
    assert status == 2
    line = one_error_line(log)
    assert "cifar10" in line and str(empty) in line and "experiments.prepare_data" in line, line
    assert not workdir.exists() and not os.listdir(empty)


def test_internal_errors_keep_their_traceback(tmp_path):
    """experiments.cli.run: anything that is not a UserError is a bug: traceback, status 1."""
    program = ("from experiments import cli\n"
               "def main(argv):\n"
               "    raise RuntimeError('internal failure')\n"
               "cli.run(main)\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: internal failure" in result.stderr


# ------------------------------------------------------------------- config values, in-process
def _set(config, key, value):
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


BAD_VALUES = [  # key, value, a piece of the message that says what is allowed
    ("parallel", "pjit", "('shard_map', 'pmap')"),
    ("data.name", "mnist", "'sphere3d'"),
    ("model.generator", "vae", "'dcgan'"),
    ("model.energy", "transformer", "'mlp'"),
    ("train.criterion", "hinge", "'kale'"),
    ("train.penalty", "spectral", "'gradient'"),
    ("sampler.kernel", "nuts", "'mala'"),
    ("seed", -1, ">= 0"),
    ("model.latent_dim", 0, ">= 1"),
    ("train.num_steps", -3, ">= 1"),
    ("train.batch_size", 0, ">= 1"),
    ("train.checkpoint_every", 0, ">= 1"),
    ("train.keep_checkpoints", 0, ">= 1"),
    ("train.penalty_weight", float("nan"), ">= 0"),
    ("optim.energy.learning_rate", -1e-4, "> 0"),
    ("optim.base.learning_rate", float("inf"), "> 0"),
    ("optim.base.b2", 1.5, "[0, 1)"),
    ("sampler.step_size", -0.1, "> 0"),
    ("sampler.beta", 0.0, "> 0"),
    ("eval.num_heldout", 0, ">= 1"),
    ("train.a_init_batches", 0, ">= 1"),
    ("debug.nan_at_step", -2, ">= -1"),
    ("debug.sleep_per_step_s", -1.0, ">= 0"),
    ("data.std", -1.0, "> 0"),  # a dataset option: checked by the data module, named the same
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES)
def test_each_bad_value_is_one_line_naming_key_value_and_what_is_allowed(key, value, allowed):
    config = _set(test_config.get_config(), key, value)
    with pytest.raises(ConfigError) as error:
        validate(config, num_devices=4)
    message = str(error.value)
    assert "\n" not in message
    assert f"config.{key}" in message and repr(value) in message and allowed in message, message


def test_global_batch_must_divide_by_the_device_count():
    config = _set(test_config.get_config(), "train.batch_size", 18)
    validate(config, num_devices=2)
    with pytest.raises(ConfigError, match=r"^config.train.batch_size=18 does not divide by the "
                                          r"4 devices; use a multiple of 4$"):
        validate(config, num_devices=4)


def test_image_sizes_the_networks_do_not_support_are_refused():
    config = test_config.get_config("digits")  # 8x8 digits
    config.model.generator = "dcgan"
    with pytest.raises(ConfigError, match=r"^config.data.image_size=8 is not supported by "
                                          r"config.model.generator='dcgan'; allowed: \(16, 32, 64\)$"):
        validate(config, num_devices=4)
    config.data.image_size = 32
    config.model.generator_kwargs = {"image_size": 64}
    with pytest.raises(ConfigError, match=r"config.model.generator_kwargs.image_size=64 differs"):
        validate(config, num_devices=4)
    config.model.generator_kwargs = {"width": 4}
    validate(config, num_devices=4)  # dcgan at 32x32 is fine
    ring = test_config.get_config()
    ring.model.energy = "resnet"
    with pytest.raises(ConfigError, match=r"^config.model.energy='resnet' is an image network but "
                                          r"config.data.name='ring' holds vectors"):
        validate(ring, num_devices=4)
    digits = test_config.get_config("digits")
    digits.data.image_size = 12
    with pytest.raises(ConfigError, match=r"^config.data.image_size"):
        validate(digits, num_devices=4)


def test_unknown_network_arguments_are_refused():
    config = test_config.get_config()
    config.model.energy_kwargs.widht = 3
    with pytest.raises(ConfigError, match=r"^config.model.energy_kwargs: energy 'mlp' got unknown "
                                          r"keyword arguments \['widht'\]"):
        validate(config, num_devices=4)
    config = test_config.get_config()
    config.model.generator_kwargs.hidden = 0
    with pytest.raises(ConfigError, match=r"^config.model.generator_kwargs: MLPGenerator."
                                          r"hidden=0 must be an integer >= 1"):
        validate(config, num_devices=4)


def test_against_checkpoint_names_the_differing_key():
    saved = {"config": json.loads(test_config.get_config().to_json_best_effort())}
    validate_lib.against_checkpoint(test_config.get_config(), saved)  # same config: fine
    validate_lib.against_checkpoint(test_config.get_config(), {})  # no metadata: nothing to check
    for key, value in [("model.latent_dim", 8), ("model.generator", "dcgan"),
                       ("model.energy_kwargs.hidden", 32), ("data.name", "grid"), ("seed", 3)]:
        config = _set(test_config.get_config(), key, value)
        with pytest.raises(ConfigError, match=rf"^config.{re.escape(key)}={value!r} but the "
                                              r"checkpoint in /ck was written with "
                                              rf"config.{re.escape(key)}="):
            validate_lib.against_checkpoint(config, saved, directory="/ck")
    # Sampling may use another seed, not other networks; the saved config alone also works.
    sampling = _set(test_config.get_config(), "seed", 3)
    validate_lib.against_checkpoint(sampling, saved["config"], keys=validate_lib.SAMPLE_KEYS)
    with pytest.raises(ConfigError, match="latent_dim"):
        validate_lib.against_checkpoint(_set(sampling, "model.latent_dim", 2), saved["config"],
                                        keys=validate_lib.SAMPLE_KEYS)


def test_workdir_check_creates_nothing(tmp_path):
    fresh = tmp_path / "a" / "b"
    validate_lib.workdir(str(fresh))
    assert not (tmp_path / "a").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(CheckpointError, match=rf"^--workdir={re.escape(str(a_file))} is not a "
                                              r"directory"):
        validate_lib.workdir(str(a_file))


# -------------------------------------------------------------------- checkpoints, file level
def _tiny_state(value):
    return {"w": np.full((64, 8), value, np.float32), "base_step": np.int32(value)}


@pytest.mark.parametrize("damage", ["array_data", "_METADATA", "manifest.ocdbt"])
def test_restore_skips_a_damaged_latest_step_and_sets_it_aside(tmp_path, damage):
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpoint.Checkpoints(directory)
    for step in (1, 2):
        ckpt.save(step, _tiny_state(step))
    ckpt.close()
    step_dir = os.path.join(directory, "2", "default")
    if damage == "array_data":
        _truncate_array_files(step_dir)
    else:
        path = os.path.join(step_dir, damage)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    ckpt = checkpoint.Checkpoints(directory)
    step, state, skipped = ckpt.restore_newest_readable(_tiny_state(0))
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    assert [s for s, _ in skipped] == [2] and "\n" not in skipped[0][1]
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
    assert os.path.isdir(os.path.join(directory + checkpoint.UNREADABLE_SUFFIX, "2"))
    ckpt.close()


def test_restore_when_every_step_is_damaged_moves_nothing(tmp_path):
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpoint.Checkpoints(directory)
    ckpt.save(1, _tiny_state(1))
    ckpt.close()
    _truncate_array_files(os.path.join(directory, "1"), lambda size: min(size, 3))
    ckpt = checkpoint.Checkpoints(directory)
    with pytest.raises(CheckpointError, match=r"could be restored \(steps \[1\]\); newest, step 1"):
        ckpt.restore_newest_readable(_tiny_state(0))
    assert ckpt.all_steps() == [1]
    assert not os.path.exists(directory + checkpoint.UNREADABLE_SUFFIX)
    ckpt.close()


def test_non_finite_checkpoints_count_as_unreadable(tmp_path):
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpoint.Checkpoints(directory)
    ckpt.save(1, _tiny_state(1))
    ckpt.save(2, {"w": np.full((64, 8), np.nan, np.float32), "base_step": np.int32(2)})
    ckpt.wait()
    step, _, skipped = ckpt.restore_newest_readable(_tiny_state(0),
                                                    is_good=checkpoint.all_finite)
    assert step == 1 and skipped == [(2, "it holds non-finite values")]
    ckpt.close()


def test_a_metrics_line_cut_short_by_a_kill_is_dropped(tmp_path):
    writer = outputs.MetricWriter(str(tmp_path), tensorboard=False)
    for step in (1, 2, 3):
        writer.write(step, {"loss": float(step)})
    path = os.path.join(str(tmp_path), outputs.METRICS_FILE)
    with open(path, "a") as f:
        f.write('{"step": 4, "lo')  # what a SIGKILL in the middle of a write leaves
    assert [r["step"] for r in outputs.read_metrics(str(tmp_path))] == [1, 2, 3]
    writer.truncate_after(2)
    writer.write(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in outputs.read_metrics(str(tmp_path))] == [
        (1, 1.0), (2, 2.0), (3, 30.0)]


# ------------------------------------------------------------------------------------ safety
def test_pickles_handed_to_our_loaders_are_refused(tmp_path):
    """Object arrays (.npy / .npz) and raw pickles: DataError, one line; nothing is unpickled."""
    marker = tmp_path / "unpickled"
    # A pickle whose loading would create `marker`: proof that it was never unpickled.
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))  # pickles by default
    np.savez(tmp_path / "objects.npz", mu=np.zeros(3), sigma=np.array([None], dtype=object))
    (tmp_path / "raw.npz").write_bytes(payload)
    (tmp_path / "raw.npy").write_bytes(payload)
    for name in ("objects.npy", "objects.npz", "raw.npz", "raw.npy"):
        with pytest.raises(DataError, match=r"holds pickled Python objects, which are never "
                                            r"loaded") as error:
            files.load_arrays(str(tmp_path / name), what="Inception statistics")
        assert "\n" not in str(error.value) and str(tmp_path / name) in str(error.value)
    assert not marker.exists()


UNPICKLING = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|"
                        r"joblib\.load\(|allow_pickle\s*=\s*True|\.load\(\s*[^)]*weights_only"
                        r"\s*=\s*False")


def test_no_code_path_unpickles_user_files():
    """No module of the library or the binaries unpickles; np.load always passes
    allow_pickle=False (torch.load, in the weight converter only, weights_only=True)."""
    sources = [p for d in ("kale_jax", "experiments")
               for p in glob.glob(os.path.join(REPO, d, "**", "*.py"), recursive=True)]
    assert len(sources) > 10
    offenders = []
    for path in sources:
        text = open(path).read()
        offenders += [f"{path}: {m.group(0)}" for m in UNPICKLING.finditer(text)]
        for call in re.finditer(r"\bnp\.load\(([^)]*)\)", text):
            if "allow_pickle=False" not in call.group(1):
                offenders.append(f"{path}: np.load({call.group(1)})")
        for call in re.finditer(r"\btorch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path}: torch load without weights_only=True: {call.group(0)}")
    assert not offenders, offenders


def test_set_aside_moves_and_keeps_the_files(tmp_path):
    """set_aside moves, never deletes: a damaged step stays on disk for inspection."""
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpoint.Checkpoints(directory)
    ckpt.save(1, _tiny_state(1))
    ckpt.wait()
    before = _snapshot(os.path.join(directory, "1"))
    moved = ckpt.set_aside(1)
    assert _snapshot(moved) == before and ckpt.all_steps() == []
    ckpt.close()
