"""Tests of kale_jax.workdir_lock: one writer per workdir.

In-process except the stale lock, which is left by a real process killed with SIGKILL (a small
Python that takes the lock and sleeps). The binaries' use of the lock (a second
`experiments.train` on a workdir in use exits 2 naming the first) is in tests/test_storage.py.
"""
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from kale_jax import workdir_lock
from kale_jax.errors import CheckpointError, WorkdirBusyError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Takes the lock on argv[1], says so, and waits to be killed.
HOLD_LOCK = ("import sys, time; from kale_jax import workdir_lock; "
             "workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); "
             "time.sleep(600)")


def _content(workdir):
    with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
        return f.read()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_lock_is_refused_naming_the_holder_and_release_frees_it(tmp_path):
    workdir = str(tmp_path)
    first = workdir_lock.WorkdirLock(workdir)
    assert first.acquire() is None
    holder = json.loads(_content(workdir))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()

    # flock belongs to an open file, so a second open in this process is a second run.
    with pytest.raises(WorkdirBusyError) as error:
        workdir_lock.WorkdirLock(workdir).acquire()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"--workdir={workdir} is in use by another run (pid {os.getpid()} "
                              f"on host {socket.gethostname()}, started ")
    assert os.path.join(workdir, ".lock") in message and "pass another --workdir" in message

    first.release()
    assert _content(workdir) == ""  # a run that ends normally leaves nothing to take over
    second = workdir_lock.WorkdirLock(workdir)
    assert second.acquire() is None  # no takeover: the lock was released
    second.release()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_line(tmp_path, caplog):
    workdir = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, workdir], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusyError, match=rf"pid {holder.pid} on host"):
            workdir_lock.WorkdirLock(workdir).acquire()  # alive: refused
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads(_content(workdir))["pid"] == holder.pid  # killed: its line stays

    lock = workdir_lock.WorkdirLock(workdir)
    with caplog.at_level(logging.WARNING):
        stale = lock.acquire()
    assert stale is not None and stale.pid == holder.pid
    lines = [r.getMessage() for r in caplog.records if "Took over the lock" in r.getMessage()]
    assert len(lines) == 1 and f"pid {holder.pid} on host {socket.gethostname()}" in lines[0]
    assert json.loads(_content(workdir))["pid"] == os.getpid()
    lock.release()


def test_without_flock_the_holder_named_in_the_file_decides(tmp_path, monkeypatch):
    """File systems without flock (ENOLCK): a live holder or one on another host keeps the
    workdir, a dead one on this host is taken over."""
    workdir = str(tmp_path)

    def no_flock(fd, operation):
        del fd
        if operation & fcntl.LOCK_UN:
            return
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)

    def plant(pid, host):
        with open(path, "w") as f:
            json.dump({"pid": pid, "host": host, "started": 0.0}, f)

    parent = os.getppid()  # alive
    plant(parent, socket.gethostname())
    with pytest.raises(WorkdirBusyError, match=rf"pid {parent} on host"):
        workdir_lock.WorkdirLock(workdir).acquire()
    plant(_dead_pid(), "another-host")  # its pid cannot be checked from here
    with pytest.raises(WorkdirBusyError, match="on host another-host"):
        workdir_lock.WorkdirLock(workdir).acquire()
    dead = _dead_pid()
    plant(dead, socket.gethostname())
    lock = workdir_lock.WorkdirLock(workdir)
    assert lock.acquire().pid == dead
    lock.release()


def test_hold_releases_when_the_run_raises(tmp_path):
    workdir = str(tmp_path)
    with pytest.raises(RuntimeError):
        with workdir_lock.hold(workdir) as lock:
            assert lock is not None and json.loads(_content(workdir))["pid"] == os.getpid()
            raise RuntimeError("the run failed")
    assert _content(workdir) == ""
    with workdir_lock.hold(workdir):
        pass


def test_an_unwritable_workdir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match=r"cannot create the lock file .*; pass a writable "
                                              r"directory$"):
        workdir_lock.WorkdirLock(str(blocker)).acquire()
