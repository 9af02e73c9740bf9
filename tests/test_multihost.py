"""Multi-process training that has run: `python -m experiments.train` as a 2-process job.

Two processes on localhost form one job (--coordinator_address=localhost:PORT, --num_processes=2,
--process_id=0/1), each with one CPU device (not conftest's 4), so the 1-D mesh has 2 devices on 2
processes and every collective (the steps' pmean / all_gather, the stop flag's all-reduce, the
collective checkpoint) crosses processes through jax's CPU collectives (gloo). The children share
the session's persistent compilation cache. tests/write_audit/sitecustomize.py (on the children's
PYTHONPATH) records the files each process opens for writing in the workdir, through Python.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import max_abs_difference

from kale_jax import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIT_DIR = os.path.join(REPO, "tests", "write_audit")
TIMEOUT = 300  # seconds for one run (a loaded 2-core machine; a run takes ~10 s when idle)
FAST = ("--config.train.tensorboard=False",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(base: dict, workdir: str, audit_log: str) -> dict:
    """conftest's environment `base` with one CPU device, and the write audit of `workdir`."""
    env = dict(base)
    env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                                if not flag.startswith("--xla_force_host_platform_device_count"))
    env["JAX_NUM_CPU_DEVICES"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (AUDIT_DIR, env.get("PYTHONPATH")) if p)
    env["KALE_JAX_WRITE_AUDIT"] = audit_log
    env["KALE_JAX_WRITE_AUDIT_ROOT"] = workdir
    return env


def _command(workdir, *arguments):
    return [sys.executable, "-m", "experiments.train", "--config=configs/test.py",
            f"--workdir={workdir}", *arguments]


class Job:
    """The processes of one run: 2 as one job (process_id 0, 1), or 1 plain process."""

    def __init__(self, env: dict, workdir: str, *overrides: str, num_processes: int = 2):
        self.workdir = workdir
        job = []
        if num_processes > 1:
            port = _free_port()
            job = [f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}"]
        self.audit_logs = [f"{workdir}.audit{i}" for i in range(num_processes)]
        self.processes = [
            subprocess.Popen(
                _command(workdir, *job, *([f"--process_id={i}"] if job else []), *overrides),
                cwd=REPO, env=_env(env, workdir, self.audit_logs[i]), text=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(num_processes)]
        self.logs = None

    def finish(self, timeout: float = TIMEOUT) -> list:
        """Waits for every process; asserts exit status 0; returns their logs (stderr)."""
        if self.logs is None:
            try:
                self.logs = [p.communicate(timeout=timeout)[1] for p in self.processes]
            finally:
                self.kill()
            for i, (process, log) in enumerate(zip(self.processes, self.logs)):
                assert process.returncode == 0, f"process {i}:\n{log[-3000:]}"
        return self.logs

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()

    def written(self, process_id: int) -> set:
        """Workdir paths (relative) that process `process_id` wrote, renamed or removed."""
        with open(self.audit_logs[process_id]) as f:
            return {line.rstrip("\n").split("\t", 1)[1] for line in f}


def _restore(workdir: str, step: int):
    """Step `step` of a run of configs/test.py, restored onto this process's first device (as
    experiments.sample loads a checkpoint, whatever topology wrote it); host arrays."""
    import jax  # pylint: disable=g-import-not-at-top
    from configs import test as test_config  # pylint: disable=g-import-not-at-top
    from kale_jax import gebm_model  # pylint: disable=g-import-not-at-top
    state, restored_step, _ = gebm_model.restore(test_config.get_config(), workdir, step)
    assert restored_step == step
    return jax.device_get(state)


def _metrics(workdir: str) -> list:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _fingerprints(logs) -> list:
    return [re.findall(r"Process (\d)/2: state fingerprint (\w+) at step (\d+)", log)
            for log in logs]


# ------------------------------------------------------------------------------ bad flags
@pytest.mark.parametrize("flags, says", [
    (["--coordinator_address=localhost:1234", "--num_processes=2"], "needs --process_id"),
    (["--process_id=0"], "needs --coordinator_address and --num_processes"),
    (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
     "is not HOST:PORT"),
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=2"],
     "must be below --num_processes=2"),
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=0",
      "--distributed=no"], "--distributed=no"),
    (["--local_device_ids=a"], "--local_device_ids=a must be non-negative integers"),
])
def test_bad_job_flags_are_one_line_usage_errors(env, tmp_path, flags, says):
    """A bad combination of the job flags exits 2 with one line, before jax starts."""
    result = subprocess.run(_command(str(tmp_path / "w"), *flags), cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not os.path.exists(tmp_path / "w")


# ------------------------------------------------------------------- one job, two processes
@pytest.fixture(scope="module")
def two_and_one(env, tmp_path_factory):
    """configs/test.py (6 base steps, global batch 16) as a 2-process job (8 rows each) and as
    one process on one device, started together (their compilations overlap)."""
    root = tmp_path_factory.mktemp("multihost")
    jobs = [Job(env, str(root / "two"), *FAST),
            Job(env, str(root / "one"), *FAST, num_processes=1)]
    try:
        for job in jobs:
            job.finish()
    finally:
        for job in jobs:
            job.kill()
    return jobs


def test_two_processes_train_as_one_job(two_and_one):
    """Both processes end with the same state (bitwise: equal fingerprints of their own copies),
    the collectively written checkpoint holds it, and it equals a single process's training on
    the same global batch.

    Tolerance: the processes see the same data (process p gets rows [8p, 8p + 8) of the same
    global batch) and the same random draws (made for the global batch, each device keeping its
    rows), so only the order of float32 reductions differs (per-device partial sums, then a
    cross-process mean), a few ulps per step; as in tests/test_train.py's 1-vs-4-device test,
    1e-5 absolute on values of order 1 leaves room for that over 6 base steps, while a real
    difference (a process training on the wrong rows, an unsynchronised gradient or BatchNorm
    statistic) moves parameters by >= 1e-3 (the training below moves them by more than that).
    """
    two, one = two_and_one
    logs = two.finish()
    assert "JAX process 0/2, 1 local / 2 global devices" in logs[0]
    assert "JAX process 1/2, 1 local / 2 global devices" in logs[1]
    assert all("on 2 device(s)" in log and "Finished 6 base steps" in log for log in logs)
    prints = _fingerprints(logs)
    assert prints[0] == [("0", prints[0][0][1], "6")] and prints[1] == [("1", prints[0][0][1],
                                                                          "6")], prints
    assert "on 1 device(s)" in one.finish()[0]

    joint, alone = _restore(two.workdir, 6), _restore(one.workdir, 6)
    assert max_abs_difference(joint, alone) < 1e-5
    assert int(joint.base_step) == 6
    # Training moved the parameters, so the equality above compares something.
    earlier = _restore(two.workdir, 4)
    assert max_abs_difference(earlier.generator_params, joint.generator_params) > 1e-3
    assert max_abs_difference(earlier.energy_params, joint.energy_params) > 1e-3
    # The same metrics as the single process, logged once per step.
    rows_two, rows_one = _metrics(two.workdir), _metrics(one.workdir)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    for a, b in zip(rows_two, rows_one):
        for key in ("energy_loss", "base_loss", "kale_heldout"):
            if key in b:
                assert abs(a[key] - b[key]) < 1e-4, (key, a, b)


def test_only_process_zero_writes_outputs_and_holds_the_lock(two_and_one):
    """Process 0 wrote metrics.jsonl, config.json, the samples and the lock; process 1 wrote
    nothing in the workdir through Python (checkpoints are written by both through orbax)."""
    two, _ = two_and_one
    two.finish()
    lead, other = two.written(0), two.written(1)
    assert {".lock", "metrics.jsonl", "config.json"} <= lead, sorted(lead)
    assert any(p.startswith("samples" + os.sep) for p in lead), sorted(lead)
    outside_checkpoints = {p for p in other if not p.startswith("checkpoints")}
    assert not outside_checkpoints, sorted(outside_checkpoints)
    steps = [r["step"] for r in _metrics(two.workdir) if "energy_loss" in r]
    assert steps == [2, 4, 6]  # each row once
    assert os.path.getsize(os.path.join(two.workdir, ".lock")) == 0  # released at the end


# ------------------------------------------------------------------------------- stop signal
def _wait_for_rows(workdir: str, jobs: Job, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    path = os.path.join(workdir, "metrics.jsonl")
    while time.monotonic() < deadline:
        if os.path.exists(path) and any("energy_loss" in r for r in _metrics(workdir)):
            return
        assert all(p.poll() is None for p in jobs.processes), "a process exited early"
        time.sleep(0.1)
    raise AssertionError(f"no training row in {path} after {timeout} s")


def test_sigterm_to_one_process_stops_both_at_the_same_step(env, two_and_one, tmp_path):
    """SIGTERM to process 1 only: both processes save the same step and exit 0; rerunning the
    job resumes from that step and finishes."""
    two_and_one[0].finish()  # its compiled programs are in the cache
    workdir = str(tmp_path / "preempted")
    overrides = ("--config.train.log_every=1", "--config.train.eval_every=100000",
                 "--config.train.checkpoint_every=100000", "--config.debug.sleep_per_step_s=0.2",
                 *FAST)
    job = Job(env, workdir, "--config.train.num_steps=100000", *overrides)
    try:
        _wait_for_rows(workdir, job)
        job.processes[1].send_signal(signal.SIGTERM)
        logs = job.finish()
    finally:
        job.kill()
    assert "Received signal" in logs[1] and "Received signal" not in logs[0]
    assert "Another process received a stop signal" in logs[0]
    stops = [re.findall(r"Stopped by signal at step (\d+)", log) for log in logs]
    assert stops[0] == stops[1] and len(stops[0]) == 1, stops
    stop_step = int(stops[0][0])
    prints = _fingerprints(logs)
    assert prints[0][0][1:] == prints[1][0][1:] == (prints[0][0][1], str(stop_step))
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.all_steps() == [stop_step]
    ckpt.close()

    num_steps = stop_step + 2
    logs = Job(env, workdir, f"--config.train.num_steps={num_steps}", *overrides).finish()
    for log in logs:
        assert f"Resuming from step {stop_step}" in log
        assert f"Finished {num_steps} base steps" in log
    steps = [r["step"] for r in _metrics(workdir) if "energy_loss" in r]
    assert steps == list(range(1, num_steps + 1))  # each step once, over both runs
