"""Storage faults (issue 20): a full disk, two runs on one workdir, honest save logging.

Unit tests of kale_jax.storage, then one scenario of real `python -m experiments.train`
subprocesses (configs/test.py, the toy ring, 8 steps with a checkpoint at every step) that the
tests below read:

  first    a run on a normal workdir, slowed by config.debug.sleep_per_step_s so that it holds
           its workdir for more than 10 s after its first checkpoint; the uninterrupted reference;
  second   started on the first's workdir after the first's first checkpoint: it must exit 2
           within 10 s, naming the first, which finishes untouched;
  full     then the same run on a 400 KiB tmpfs mounted by the test (when it runs as root, as in
           CI): the disk fills after a few checkpoints. Without root it falls back on
           config.debug.full_disk_at_step=4 (every write from step 4 fails with ENOSPC);
  holder   a process that takes the full run's workdir lock and is killed with SIGKILL;
  resumed  once the tmpfs is grown to 4 MiB: takes the stale lock over (one line), resumes from
           the last complete checkpoint and must end with the first run's parameters exactly.

The second, full, holder and resumed runs follow one another while the first one sleeps between
its steps, so the scenario costs about one compilation plus the three short runs (~20-25 s of
wall time; every binary shares the session's compilation cache).
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import test as test_config
from kale_jax import checkpoint, gebm_model, storage, workdir_lock
from kale_jax.errors import StorageError
from kale_jax.train import outputs

from helpers import one_error_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 8
OVERRIDES = ("--config.train.tensorboard=False", "--config.train.eval_every=100000",
             "--config.train.log_every=1", "--config.train.checkpoint_every=1",
             "--config.train.keep_checkpoints=100", f"--config.train.num_steps={NUM_STEPS}")
# 1.5 s a step: after its first checkpoint the first run holds its workdir for 7 x 1.5 > 10 s,
# the second run's whole budget.
FIRST_RUN = ("--config.debug.sleep_per_step_s=1.5",)
FALLBACK_FULL_DISK_AT = 4
HOLD_LOCK = ("import sys, time; from kale_jax import workdir_lock; "
             "workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); "
             "time.sleep(600)")


# ---------------------------------------------------------------------------------- unit tests
def test_write_failures_are_recognised_with_their_errno():
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed '
                             "to write 153505 bytes to file 11: No space left on device "
                             "[os_error_code='28']")
    assert storage.is_write_failure(tensorstore) and storage.error_number(tensorstore) == 28
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert storage.is_write_failure(quota) and storage.error_number(quota) == errno.EDQUOT
    tensorflow = RuntimeError("{{function_node __wrapped__CreateSummaryFileWriter}} /w/events; "
                              "No space left on device Failed ...")
    assert storage.is_write_failure(tensorflow) and storage.error_number(tensorflow) == 28
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = tensorstore
    assert storage.is_write_failure(wrapped)
    assert not storage.is_write_failure(ValueError("shapes (3,) and (4,) do not match"))

    failure = storage.WriteFailed("checkpoint step 200", "/w/checkpoints/200", tensorstore)
    assert isinstance(failure, OSError) and failure.errno == errno.ENOSPC
    assert str(failure) == ("cannot write checkpoint step 200 (/w/checkpoints/200): No space "
                            "left on device")
    error = storage.run_stopped(failure, workdir="/", checkpoint_dir="/w/checkpoints",
                                committed_step=100)
    assert isinstance(error, StorageError) and error.exit_status == 4 and "\n" not in str(error)
    assert re.fullmatch(r"cannot write checkpoint step 200 \(/w/checkpoints/200\): No space left "
                        r"on device; [\d.]+ [KMG]?i?B free in /\. Stopped; last complete "
                        r"checkpoint: step 100 in /w/checkpoints\. Free some space \(or move the "
                        r"workdir to a larger disk\) and rerun the same command: it resumes from "
                        r"there", str(error)), str(error)
    assert storage.human_bytes(512) == "512 B" and storage.human_bytes(3 << 20) == "3.0 MiB"


def test_a_line_that_does_not_fit_is_cut_off_again(small_filesystems, tmp_path):
    """On an 8 KiB tmpfs holding a 3000-byte file, a 6000-byte line fits only partly (5192 bytes
    are free): append_line raises and leaves the file as it was. Without a mount, the simulated
    full disk fails before any byte is written."""
    filesystem = small_filesystems.mount("8k")
    path = os.path.join(filesystem or str(tmp_path), outputs.METRICS_FILE)
    with open(path, "w") as f:
        f.write("x" * 2999 + "\n")
    if filesystem is None:
        storage.simulate_full_disk(True)
    try:
        with pytest.raises(storage.WriteFailed, match=r"^cannot write a metrics row .*: No space "
                                                      r"left on device$"):
            storage.append_line(path, "y" * 5999 + "\n", what="a metrics row")
    finally:
        storage.simulate_full_disk(False)
    with open(path) as f:
        assert f.read() == "x" * 2999 + "\n"
    storage.append_line(path, "z\n")  # a line that fits is written whole
    assert os.path.getsize(path) == 3002


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(small_filesystems,
                                                                         tmp_path):
    filesystem = small_filesystems.mount("8k")
    path = os.path.join(filesystem or str(tmp_path), "config.json")
    storage.write_atomically(path, "old")
    if filesystem is None:
        storage.simulate_full_disk(True)
    try:
        with pytest.raises(storage.WriteFailed, match="^cannot write config.json"):
            storage.write_atomically(path, "n" * 20000, what="config.json")
    finally:
        storage.simulate_full_disk(False)
    assert open(path).read() == "old" and os.listdir(os.path.dirname(path)) == ["config.json"]


# -------------------------------------------------------------------------------- the scenario
def _command(workdir, *overrides):
    return [sys.executable, "-m", "experiments.train", "--config=configs/test.py",
            f"--workdir={workdir}", *OVERRIDES, *overrides]


def _complete_steps(directory):
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


@pytest.fixture(scope="module")
def scenario(env, tmp_path_factory, small_filesystems):
    """Runs the scenario of the module docstring; returns what the tests read."""
    root = tmp_path_factory.mktemp("storage")
    out = {"first_dir": str(root / "first")}
    first_log = open(root / "first.log", "w")
    first = subprocess.Popen(_command(out["first_dir"], *FIRST_RUN), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=first_log)
    out["first_pid"] = first.pid
    try:
        # The second run starts once the first has compiled and saved (it then mostly sleeps,
        # holding its lock), so the second's start-up is not slowed by the first's compilation.
        committed = os.path.join(out["first_dir"], "checkpoints", "1")
        deadline = time.monotonic() + 300
        while not os.path.isdir(committed):
            assert first.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.05)
        started = time.monotonic()
        second = subprocess.run(_command(out["first_dir"]), cwd=REPO, env=env, text=True,
                                capture_output=True, timeout=300)
        out["second"] = (second.returncode, second.stderr, time.monotonic() - started)
        out["first_alive_after_second"] = first.poll() is None

        filesystem = small_filesystems.mount("400k")
        out["real_disk"] = filesystem is not None
        out["full_dir"] = os.path.join(filesystem, "run") if filesystem else str(root / "full")
        fallback = () if filesystem else (
            f"--config.debug.full_disk_at_step={FALLBACK_FULL_DISK_AT}",)
        full = subprocess.run(_command(out["full_dir"], *fallback), cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=600)
        out["full"] = (full.returncode, full.stderr)
        out["full_listing"] = os.listdir(os.path.join(out["full_dir"], "checkpoints"))
        with open(os.path.join(out["full_dir"], outputs.METRICS_FILE)) as f:
            out["full_metrics"] = f.read()

        if filesystem:
            small_filesystems.resize(filesystem, "4m")  # space is freed
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, out["full_dir"]], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        out["holder_pid"] = holder.pid
        resumed = subprocess.run(_command(out["full_dir"]), cwd=REPO, env=env, text=True,
                                 capture_output=True, timeout=600)
        out["resumed"] = (resumed.returncode, resumed.stderr)
        out["first_status"] = first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
        first_log.close()
    out["first_log"] = (root / "first.log").read_text()
    return out


def test_a_second_run_on_a_workdir_in_use_exits_2_at_once_naming_the_first(scenario):
    status, stderr, seconds = scenario["second"]
    assert scenario["first_alive_after_second"], "the first run ended before the second's check"
    assert status == 2, stderr[-3000:]
    assert seconds < 10
    line = one_error_line(stderr)
    lock_file = os.path.join(scenario["first_dir"], workdir_lock.LOCK_FILE)
    assert re.fullmatch(rf"error: --workdir={re.escape(scenario['first_dir'])} is in use by "
                        rf"another run \(pid \d+ on host .+, started .+; lock file "
                        rf"{re.escape(lock_file)}\); wait for it to finish or stop it, or pass "
                        r"another --workdir .*", line), line
    assert f"(pid {scenario['first_pid']} on host " in line
    assert "Starting a fresh run" not in stderr  # refused before touching the workdir


def test_the_first_run_finishes_untouched_and_logs_saved_only_after_saving(scenario):
    log = scenario["first_log"]
    assert scenario["first_status"] == 0, log[-3000:]
    workdir = scenario["first_dir"]
    records = outputs.read_metrics(workdir)
    assert [r["step"] for r in records if "energy_loss" in r] == list(range(1, NUM_STEPS + 1))
    assert log.count("Starting a fresh run") == 1 and "Resuming" not in log
    assert _complete_steps(os.path.join(workdir, "checkpoints")) == list(range(1, NUM_STEPS + 1))
    assert open(os.path.join(workdir, workdir_lock.LOCK_FILE)).read() == ""  # released
    # Save log order: each step's "Saved" comes after its "started", once per step.
    lines = log.splitlines()
    for step in range(1, NUM_STEPS + 1):
        started = [i for i, l in enumerate(lines)
                   if l.endswith(f"Saving checkpoint at step {step} started.")]
        saved = [i for i, l in enumerate(lines) if l.endswith(f"Saved checkpoint at step {step}.")]
        assert len(started) == 1 and len(saved) == 1 and started[0] < saved[0], step
    checkpoints = os.path.join(workdir, "checkpoints")
    assert lines[-1].endswith(f"Finished {NUM_STEPS} base steps; last committed checkpoint: step "
                              f"{NUM_STEPS} in {checkpoints}."), lines[-1]


def _committed_at_failure(scenario) -> int:
    line = one_error_line(scenario["full"][1])
    return int(re.search(r"last complete checkpoint: step (\d+) in ", line).group(1))


def test_a_full_disk_stops_the_run_with_status_4_and_one_line(scenario):
    status, stderr = scenario["full"]
    assert status == StorageError.exit_status == 4, stderr[-3000:]
    line = one_error_line(stderr)
    workdir = scenario["full_dir"]
    checkpoints = os.path.join(workdir, "checkpoints")
    match = re.fullmatch(
        rf"error: cannot write (checkpoint step (\d+)|a metrics row|config\.json) \(.+\): No "
        rf"space left on device; [\d.]+ [KMG]?i?B free in {re.escape(workdir)}\. Stopped; last "
        rf"complete checkpoint: step (\d+) in {re.escape(checkpoints)}\. Free some space \(or "
        r"move the workdir to a larger disk\) and rerun the same command: it resumes from there",
        line)
    assert match, line
    committed = int(match.group(3))
    assert committed >= 1 and committed == max(int(n) for n in scenario["full_listing"]
                                               if n.isdigit())
    if match.group(2):  # a checkpoint failed: it was started, never reported saved
        assert f"Saving checkpoint at step {match.group(2)} started." in stderr
        assert f"Saved checkpoint at step {match.group(2)}." not in stderr
    if scenario["real_disk"]:
        low = stderr.find("Low disk space")
        assert 0 <= low < stderr.find("error: "), stderr[-3000:]  # warned before it failed
    else:
        assert committed == FALLBACK_FULL_DISK_AT - 1


def test_a_full_disk_leaves_no_temporary_directory_and_only_whole_metrics_lines(scenario):
    assert not [n for n in scenario["full_listing"] if checkpoint.TMP_MARK in n]
    text = scenario["full_metrics"]
    assert text.endswith("\n")
    steps = [json.loads(line)["step"] for line in text.splitlines()]  # every line parses
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= _committed_at_failure(scenario)


def _restore(workdir, step):
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        return jax.device_get(ckpt.restore(step))
    finally:
        ckpt.close()


def test_after_space_is_freed_the_resumed_run_equals_the_uninterrupted_one(scenario):
    status, stderr = scenario["resumed"]
    assert status == 0, stderr[-3000:]
    committed = _committed_at_failure(scenario)
    takeover = [line for line in stderr.splitlines() if "Took over the lock" in line]
    assert len(takeover) == 1 and f"pid {scenario['holder_pid']} on host" in takeover[0]
    assert f"Resuming from step {committed} " in stderr
    records = outputs.read_metrics(scenario["full_dir"])
    assert [r["step"] for r in records if "energy_loss" in r] == list(range(1, NUM_STEPS + 1))
    resumed = _restore(scenario["full_dir"], NUM_STEPS)
    uninterrupted = _restore(scenario["first_dir"], NUM_STEPS)
    assert jax.tree_util.tree_structure(resumed) == jax.tree_util.tree_structure(uninterrupted)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(uninterrupted)):
        np.testing.assert_array_equal(a, b)


def test_sample_reads_the_latest_committed_checkpoint_of_a_workdir_in_use(scenario):
    """Sampling (gebm_model.restore, which experiments.sample and kale_jax.load use) beside a live
    training run: a save in progress (its temporary directory) is neither read nor deleted, and
    nothing in the workdir changes."""
    workdir = scenario["first_dir"]
    checkpoints = os.path.join(workdir, "checkpoints")
    in_progress = os.path.join(checkpoints, f"{NUM_STEPS + 1}{checkpoint.TMP_MARK}-1700000000")
    os.makedirs(in_progress)
    open(os.path.join(in_progress, "partial"), "w").close()
    lock = workdir_lock.WorkdirLock(workdir)
    lock.acquire()  # the workdir is in use
    try:
        before = {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns
                  for r, _, names in os.walk(workdir) for n in names}
        config = test_config.get_config()
        state, step, _ = gebm_model.restore(config, workdir)
        after = {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns
                 for r, _, names in os.walk(workdir) for n in names}
    finally:
        lock.release()
    assert step == NUM_STEPS and int(state.base_step) == NUM_STEPS
    assert after == before and os.path.isdir(in_progress)
