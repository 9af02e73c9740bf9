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

    def __init__(self, env: dict, workdir: str, *overrides: str, num_processes: int = 2,
                 name: str = "job"):
        self.workdir = workdir
        job = []
        if num_processes > 1:
            port = _free_port()
            job = [f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}"]
        self.audit_logs = [f"{workdir}.{name}.audit{i}" for i in range(num_processes)]
        # Logs go to files: a pipe that fills while another process is waited for would block
        # its writer, and with it the collectives of the whole job.
        self.log_paths = [f"{workdir}.{name}.log{i}" for i in range(num_processes)]
        self.processes = []
        for i in range(num_processes):
            with open(self.log_paths[i], "w") as log:
                self.processes.append(subprocess.Popen(
                    _command(workdir, *job, *([f"--process_id={i}"] if job else []), *overrides),
                    cwd=REPO, env=_env(env, workdir, self.audit_logs[i]),
                    stdout=subprocess.DEVNULL, stderr=log))
        self.logs = None
        self.ended = [None] * num_processes  # time.monotonic() when each process was seen gone

    def finish(self, timeout: float = TIMEOUT, status: int = 0) -> list:
        """Waits for every process (noting when each exits, to 0.05 s); asserts exit status
        `status`; returns their logs (stderr)."""
        if self.logs is None:
            deadline = time.monotonic() + timeout
            try:
                while None in self.ended and time.monotonic() < deadline:
                    for i, process in enumerate(self.processes):
                        if self.ended[i] is None and process.poll() is not None:
                            self.ended[i] = time.monotonic()
                    time.sleep(0.05)
            finally:
                self.kill()
            self.logs = []
            for path in self.log_paths:
                with open(path) as f:
                    self.logs.append(f.read())
            for i, (process, log) in enumerate(zip(self.processes, self.logs)):
                assert process.returncode == status, f"process {i}:\n{log[-3000:]}"
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
    (["--local_device_ids=0"], "--local_device_ids is for a job of several processes"),
])
def test_bad_job_flags_are_one_line_usage_errors(env, tmp_path, flags, says):
    """A bad combination of the job flags exits 2 with one line, before anything is built (the
    last case once jax finds no cluster)."""
    result = subprocess.run(_command(str(tmp_path / "w"), *flags), cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not os.path.exists(tmp_path / "w")


# ---------------------------------------------------------- one job, stopped and resumed
OVERRIDES = ("--config.train.log_every=1", "--config.train.eval_every=100000",
             "--config.train.checkpoint_every=100000", "--config.train.tensorboard=False")


def _wait_for_rows(job: Job, timeout: float = TIMEOUT) -> None:
    """Waits until the job has logged a training row (its steps are compiled and running)."""
    deadline = time.monotonic() + timeout
    path = os.path.join(job.workdir, "metrics.jsonl")
    while time.monotonic() < deadline:
        if os.path.exists(path) and any("energy_loss" in r for r in _metrics(job.workdir)):
            return
        assert all(p.poll() is None for p in job.processes), "a process exited early"
        time.sleep(0.1)
    raise AssertionError(f"no training row in {path} after {timeout} s")


@pytest.fixture(scope="module")
def preempted_job(env, tmp_path_factory):
    """configs/test.py (global batch 16: 8 rows per process) as a 2-process job, one CPU device
    each, asked for 100000 base steps and sent SIGTERM on process 1 only once it trains; then
    the same job rerun with every write failing from the step after the stop on
    (config.debug.full_disk_at_step: only process 0 writes anything but checkpoints, and no
    checkpoint is due, so only process 0 meets the failure); then the job rerun without the
    fault for 2 steps past the stop, and beside it one process on one device training as many
    steps from scratch.

    While the first run trains, a second 2-process job is started on the same workdir (busy).

    Returns a dict: stopped / faulted / resumed (the three 2-process Jobs, finished; faulted with
    status 4), alone (the 1-process Job), busy (the second job, finished with status 2),
    stop_step, num_steps.
    """
    root = tmp_path_factory.mktemp("multihost")
    workdir = str(root / "two")
    stopped = Job(env, workdir, "--config.train.num_steps=100000",
                  "--config.debug.sleep_per_step_s=0.2", *OVERRIDES, name="stopped")
    try:
        _wait_for_rows(stopped)
        busy = Job(env, workdir, "--config.train.num_steps=100000", *OVERRIDES, name="busy")
        try:
            busy.finish(status=2)
        finally:
            busy.kill()
        stopped.processes[1].send_signal(signal.SIGTERM)
        logs = stopped.finish()
    finally:
        stopped.kill()
    found = re.search(r"Stopped by signal at step (\d+)", logs[0])
    assert found, logs[0][-3000:]
    stop_step = int(found.group(1))
    faulted = Job(env, workdir, "--config.train.num_steps=100000",
                  f"--config.debug.full_disk_at_step={stop_step + 1}", *OVERRIDES,
                  name="faulted")
    faulted.finish(status=4)
    num_steps = stop_step + 2
    resumed = Job(env, workdir, f"--config.train.num_steps={num_steps}", *OVERRIDES,
                  name="resumed")
    alone = Job(env, str(root / "one"), f"--config.train.num_steps={num_steps}", *OVERRIDES,
                num_processes=1)
    try:
        resumed.finish()
        alone.finish()
    finally:
        resumed.kill()
        alone.kill()
    return dict(stopped=stopped, faulted=faulted, resumed=resumed, alone=alone, busy=busy,
                stop_step=stop_step, num_steps=num_steps)


def test_sigterm_to_one_process_stops_both_at_the_same_step(preempted_job):
    """SIGTERM to process 1 only: both processes save the same step and exit 0 (Job.finish);
    the rerun of the job resumes from that step on both processes and finishes."""
    logs = preempted_job["stopped"].logs
    stop_step = preempted_job["stop_step"]
    assert "Received signal" in logs[1] and "Received signal" not in logs[0]
    assert "Another process received a stop signal" in logs[0]
    for log in logs:
        assert re.findall(r"Stopped by signal at step (\d+)", log) == [str(stop_step)]
        assert "Saved checkpoint at step %d." % stop_step in log
    assert stop_step >= 1
    prints = _fingerprints(logs)
    assert prints[0][0][1:] == prints[1][0][1:] == (prints[0][0][1], str(stop_step)), prints

    num_steps = preempted_job["num_steps"]
    for log in preempted_job["resumed"].logs:
        assert f"Resuming from step {stop_step}" in log
        assert f"Finished {num_steps} base steps" in log
    workdir = preempted_job["resumed"].workdir
    ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.all_steps() == [stop_step, num_steps]
    ckpt.close()
    steps = [r["step"] for r in _metrics(workdir) if "energy_loss" in r]
    assert steps == list(range(1, num_steps + 1))  # each step once, over both runs


def test_a_write_failure_on_process_zero_stops_every_process(preempted_job):
    """Process 0's write of a metrics row fails (full disk) at the step after the resume: both
    processes leave at the same step boundary, soon after, and exit 4 (Job.finish) at about the
    same time (jax's own abort of a process left in a collective comes only after its ~100 s
    heartbeat timeout, with status 134), each with one error line and no traceback: process 0's
    names the failed write, process 1's names process 0 and its status. Nothing half-written is
    left (no temporary checkpoint directory; metrics.jsonl, read by the resume tests above, has
    whole lines only), and the rerun resumes from the stop's checkpoint (tested above)."""
    faulted, stop_step = preempted_job["faulted"], preempted_job["stop_step"]
    logs = faulted.logs
    assert abs(faulted.ended[0] - faulted.ended[1]) < 20, faulted.ended  # 2-core load: seconds
    errors = [[line for line in log.splitlines() if line.startswith("error: ")] for log in logs]
    for log, lines in zip(logs, errors):
        assert len(lines) == 1 and "Traceback" not in log, log[-3000:]
    assert "cannot write a metrics row" in errors[0][0], errors[0]
    assert "No space left on device" in errors[0][0]
    assert f"last complete checkpoint: step {stop_step} in" in errors[0][0]
    assert f"Process 0 failed at step {stop_step + 1} (exit status 4)" in logs[0]
    assert ("process 0 of 2 failed with exit status 4 (a write to the workdir failed)"
            in errors[1][0]), errors[1]
    assert f"Last complete checkpoint: step {stop_step} in" in errors[1][0]
    # The failure is shared through the step boundaries' reduction, read one boundary late:
    # launched at the boundary after the failure, read at the one after that.
    found = re.search(r"this process stopped with it at step (\d+)", errors[1][0])
    assert found and int(found.group(1)) == stop_step + 3, errors[1]
    directory = os.path.join(faulted.workdir, "checkpoints")
    assert not [n for n in os.listdir(directory) if checkpoint.TMP_MARK in n]


def test_two_processes_train_as_one_job(preempted_job):
    """Both processes end with the same state (bitwise: equal fingerprints of their own copies),
    the collectively written checkpoint holds it, and it equals a single process's training on
    the same global batch.

    Tolerance: the processes see the same data (process p gets rows [8p, 8p + 8) of the same
    global batch) and the same random draws (made for the global batch, each device keeping its
    rows), and a resume continues exactly (tests/test_train.py), so only the order of float32
    reductions differs (per-device partial sums, then a cross-process mean), a few ulps per
    step; as in tests/test_train.py's 1-vs-4-device test, 1e-5 absolute on values of order 1
    leaves room for that over the few steps here, while a real difference (a process training
    on the wrong rows, an unsynchronised gradient or BatchNorm statistic) moves parameters by
    about the learning rate, 1e-3, per step.
    """
    two, one, num_steps = preempted_job["resumed"], preempted_job["alone"], \
        preempted_job["num_steps"]
    logs = two.logs
    assert "JAX process 0/2, 1 local / 2 global devices" in logs[0]
    assert "JAX process 1/2, 1 local / 2 global devices" in logs[1]
    assert all("on 2 device(s)" in log for log in logs)
    prints = _fingerprints(logs)
    assert [p[0][0] for p in prints] == ["0", "1"]
    assert prints[0][0][1:] == prints[1][0][1:] == (prints[0][0][1], str(num_steps)), prints
    assert "on 1 device(s)" in one.logs[0]

    joint, alone = _restore(two.workdir, num_steps), _restore(one.workdir, num_steps)
    assert max_abs_difference(joint, alone) < 1e-5
    assert int(joint.base_step) == num_steps
    # Training moved the parameters, so the equality above compares something.
    earlier = _restore(two.workdir, preempted_job["stop_step"])
    assert max_abs_difference(earlier.generator_params, joint.generator_params) > 1e-3
    assert max_abs_difference(earlier.energy_params, joint.energy_params) > 1e-3
    # The same metrics as the single process, logged once per step.
    rows_two, rows_one = _metrics(two.workdir), _metrics(one.workdir)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    assert "kale_heldout" in rows_one[-1]
    for a, b in zip(rows_two, rows_one):
        for key in ("energy_loss", "base_loss", "kale_heldout"):
            if key in b:
                assert abs(a[key] - b[key]) < 1e-4, (key, a, b)


def test_only_process_zero_writes_outputs_and_holds_the_lock(preempted_job):
    """In both runs of the job, process 0 wrote metrics.jsonl, config.json, the samples and the
    lock; process 1 wrote nothing in the workdir through Python (checkpoints are written by
    both, through orbax) and did not fail on the lock."""
    two = preempted_job["resumed"]
    lead, other = (preempted_job["stopped"].written(i) | preempted_job["faulted"].written(i)
                   | two.written(i) for i in (0, 1))
    assert {".lock", "metrics.jsonl", "config.json"} <= lead, sorted(lead)
    assert any(p.startswith("samples" + os.sep) for p in lead), sorted(lead)
    outside_checkpoints = {p for p in other if not p.startswith("checkpoints")}
    assert not outside_checkpoints, sorted(outside_checkpoints)
    # Process 1 took part in the saves: orbax wrote its array metadata of every step.
    assert any(p.endswith(os.path.join("array_metadatas", "process_1")) for p in other), other
    assert os.path.getsize(os.path.join(two.workdir, ".lock")) == 0  # released at the end


def test_a_second_job_on_a_workdir_in_use_stops_on_every_process(preempted_job):
    """A second 2-process job on the workdir of a running one: both of its processes exit 2 with
    one error line, process 0's naming the first job's process 0 (the holder of the lock),
    and it writes nothing in the workdir; the first job goes on (it is stopped later, and its
    tests check that it saved and resumed)."""
    busy, first = preempted_job["busy"], preempted_job["stopped"]
    holder = f"pid {first.processes[0].pid} on host {socket.gethostname()}"
    errors = [[line for line in log.splitlines() if line.startswith("error: ")]
              for log in busy.logs]
    assert len(errors[0]) == 1 and "is in use by another run" in errors[0][0], busy.logs[0][-2000:]
    assert holder in errors[0][0]
    assert len(errors[1]) == 1 and "process 0 could not lock it" in errors[1][0], \
        busy.logs[1][-2000:]
    # Only process 0 tried the lock (opening .lock read-write to flock it; nothing written).
    assert busy.written(0) <= {".lock"} and not busy.written(1)
