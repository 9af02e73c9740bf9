"""End-to-end tests of `python -m experiments.train`, run as a subprocess from the repository root.

The subprocesses see 4 forced CPU devices and share a persistent XLA compilation cache (a
session temporary directory), so programs compiled by one run are reused by the next. The toy and
digits runs start together (module fixture) so their compilations overlap.
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from kale_jax import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_KEYS = {"energy_loss", "base_loss", "log_partition", "penalty", "kale_batch",
                 "steps_per_sec"}
EVAL_KEYS = {"kale_heldout", "kale_heldout_dual", "mmd_base", "mmd_gebm", "gebm_acceptance"}


@pytest.fixture(scope="module")
def end_to_end_runs(env, tmp_path_factory):
    """Starts the toy and the digits runs side by side (their compilations overlap on 2 cores);
    each test below waits for its own run."""
    root = tmp_path_factory.mktemp("end_to_end")
    runs = {"ring": (str(root / "ring"), "configs/test.py"),
            "digits": (str(root / "digits"), "configs/test.py:digits",
                       "--config.train.tensorboard=False")}
    processes = {name: subprocess.Popen(_command(*args), cwd=REPO, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, args in runs.items()}
    yield {name: (runs[name][0], processes[name]) for name in runs}
    for process in processes.values():
        if process.poll() is None:
            process.kill()


def _finish(run):
    """Waits for a run of end_to_end_runs: (workdir, log); asserts exit status 0."""
    workdir, process = run
    if not hasattr(process, "log"):
        _, process.log = process.communicate(timeout=600)
    assert process.returncode == 0, process.log[-3000:]
    return workdir, process.log


def _command(workdir, config="configs/test.py", *overrides):
    return [sys.executable, "-m", "experiments.train", f"--config={config}",
            f"--workdir={workdir}", *overrides]


def _run(env, workdir, config="configs/test.py", *overrides):
    result = subprocess.run(_command(workdir, config, *overrides), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _check_metrics(workdir, num_steps, log_steps, eval_steps):
    records = _records(workdir)
    assert all(isinstance(r["step"], int) for r in records)
    assert [r["step"] for r in records if "energy_loss" in r] == log_steps
    assert [r["step"] for r in records if "mmd_gebm" in r] == eval_steps
    for r in records:
        if "energy_loss" in r:
            assert TRAINING_KEYS <= set(r)
        if "mmd_gebm" in r:
            assert EVAL_KEYS <= set(r)
    final = records[-1]
    assert final["step"] == num_steps and {"mmd_base", "mmd_gebm"} <= set(final)
    return records


def test_toy_end_to_end(end_to_end_runs):
    """configs/test.py (ring, 6 steps): metrics, TensorBoard, scatter plots, checkpoints."""
    workdir, log = _finish(end_to_end_runs["ring"])
    assert "Starting a fresh run" in log and "Finished 6 base steps" in log
    assert re.search(r"step 6/6 \(100\.0%\) [\d.]+ steps/s ETA", log)
    records = _check_metrics(workdir, 6, log_steps=[2, 4, 6], eval_steps=[3, 6])
    assert {"base_modes_covered", "gebm_share_within_3std", "gebm_mode_kl"} <= set(records[-1])
    for step in (3, 6):
        with Image.open(os.path.join(workdir, "samples", f"scatter_{step:07d}.png")) as image:
            assert image.format == "PNG" and min(image.size) > 100
    events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    assert len(events) == 1
    content = open(events[0], "rb").read()
    assert b"energy_loss" in content and b"mmd_gebm" in content
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"))
    assert ckpt.all_steps() == [4, 6]  # checkpoint_every=2, keep_checkpoints=2
    metadata = ckpt.metadata()
    assert metadata["config_source"] == "configs/test.py"
    assert metadata["config"]["data"]["name"] == "ring"
    assert metadata["config"]["train"]["num_steps"] == 6
    ckpt.close()


def test_digits_end_to_end(end_to_end_runs):
    """configs/test.py:digits (8x8 images): image grids of base and GEBM samples."""
    workdir, _ = _finish(end_to_end_runs["digits"])
    _check_metrics(workdir, 6, log_steps=[2, 4, 6], eval_steps=[3, 6])
    for kind in ("base", "gebm"):
        for step in (3, 6):
            with Image.open(os.path.join(workdir, "samples", f"{kind}_{step:07d}.png")) as image:
                # 16 samples of 8x8 grey images tile a 4 x 4 grid.
                assert (image.format, image.mode, image.size) == ("PNG", "L", (32, 32))
    assert not glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))


def _wait_for_checkpoint(directory, process, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory)):
            return
        assert process.poll() is None, "training exited before its first checkpoint"
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint in {directory} after {timeout} s")


def test_sigterm_saves_and_the_next_run_resumes(env, tmp_path, end_to_end_runs):
    """SIGTERM mid-run: a checkpoint and exit status 0; the next run resumes from it.

    The first run is asked for far more steps than it can take before the signal (so the signal
    always lands mid-run, however fast the machine); the second run asks for 6 steps beyond the
    preemption point and must resume there and finish.
    """
    _finish(end_to_end_runs["ring"])  # its compiled programs are in the cache: reuse them
    workdir = str(tmp_path / "preempted")
    overrides = ("--config.train.log_every=2", "--config.train.eval_every=100000",
                 "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=3",
                 "--config.train.tensorboard=False")
    process = subprocess.Popen(
        _command(workdir, "configs/test.py", "--config.train.num_steps=100000", *overrides),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(os.path.join(workdir, "checkpoints"), process, timeout=300)
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log[-3000:]
    stopped = re.search(r"Stopped by signal at step (\d+)", log)
    assert stopped, log[-3000:]
    stop_step = int(stopped.group(1))
    assert stop_step >= 2
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"))
    assert ckpt.latest_step() == stop_step
    ckpt.close()

    num_steps = stop_step + 6
    log = _run(env, workdir, "configs/test.py", f"--config.train.num_steps={num_steps}",
               *overrides)
    assert f"Resuming from step {stop_step}" in log
    assert f"Finished {num_steps} base steps" in log
    records = _records(workdir)
    logged = [r["step"] for r in records if "energy_loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == num_steps  # each step once
    assert records[-1]["step"] == num_steps and "mmd_gebm" in records[-1]
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"))
    assert ckpt.latest_step() == num_steps
    ckpt.close()
