"""One writer per workdir: an advisory lock on WORKDIR/.lock held for the whole run.

Two runs writing one workdir would interleave their metrics rows, write two TensorBoard event
files and overwrite each other's checkpoints (a run also deletes the temporary directory of a save
in progress when it opens the checkpoints). A training run therefore takes the lock before it
writes anything: `fcntl.flock` on WORKDIR/.lock (exclusive, non-blocking), whose content names the
holder as JSON: {"pid", "host", "started"} (started: seconds since the epoch). The kernel drops a
flock when its process dies however it dies (kill -9 included), so a lock cannot outlive its run;
the holder's line left in the file by a run that did not release it (it was killed) is reported
when the next run takes the lock over. A run that ends normally empties the file.

Where the file system does not support flock (some network file systems) the content decides: a
holder on this host whose pid is gone is taken over; a live one, or one on another host (whose
pid cannot be checked), keeps the workdir. On a pod only process 0 takes the lock (the others
learn the outcome from it), so a second job on the same workdir stops on every host.

Nothing is read or written at import.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator, Optional

from absl import logging

from kale_jax.errors import CheckpointError, WorkdirBusyError

LOCK_FILE = ".lock"
# errnos of a flock that the file system does not support (rather than a lock held elsewhere).
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or held) a workdir's lock."""

    pid: int
    host: str
    started: float  # seconds since the epoch

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host}, started {when}"

    def is_alive(self) -> Optional[bool]:
        """Whether the process runs: True/False on this host, None on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
        return True


def _read(fd: int) -> Optional[Holder]:
    """The holder named in the lock file, None if it is empty or unreadable."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if not text:
            return None
        fields = json.loads(text)
        return Holder(int(fields["pid"]), str(fields["host"]), float(fields["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class WorkdirLock:
    """The lock on one workdir; `acquire` before writing, `release` at the end.

    Args:
      workdir: the run's directory (must exist).
    """

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> Optional[Holder]:
        """Takes the lock.

        Returns:
          the holder of a stale lock that was taken over (a run that was killed), or None.
        Raises:
          WorkdirBusyError: another live run holds it (the message names it); nothing written.
          CheckpointError: the lock file cannot be created (e.g. a read-only workdir).
        """
        if self._fd is not None:
            return None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CheckpointError(f"--workdir={self.workdir}: cannot create the lock file "
                                  f"{self.path} ({error.strerror}); pass a writable "
                                  "directory") from None
        try:
            previous = self._lock(fd)
            me = Holder(os.getpid(), socket.gethostname(), time.time())
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(dataclasses.asdict(me)) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if previous is not None and previous.pid != os.getpid():
            logging.warning("Took over the lock %s left by %s, which is no longer running "
                            "(it stopped without releasing it, e.g. killed).", self.path,
                            previous.describe())
            return previous
        return None

    def _lock(self, fd: int) -> Optional[Holder]:
        """Locks `fd`; returns the holder named in the file before (a stale one), if any."""
        for attempt in range(3):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _read(fd)
            except OSError as error:
                if error.errno in _NO_FLOCK:
                    break
                holder = _read(fd)
                # EWOULDBLOCK: a live process holds it, or another run's `check_free` probes it
                # for an instant (then the file names no holder): try again shortly.
                if holder is not None or attempt == 2:
                    raise self.busy(holder) from None
                time.sleep(0.05)
        holder = _read(fd)  # no flock on this file system: the content decides
        if holder is not None and holder.is_alive() is not False:
            raise self.busy(holder) from None
        return holder

    def busy(self, holder: Optional[Holder]) -> WorkdirBusyError:
        """The error saying that `holder` (None: unknown) holds this workdir."""
        who = holder.describe() if holder else "a process that has not written its name yet"
        return WorkdirBusyError(
            f"--workdir={self.workdir} is in use by another run ({who}; lock file {self.path}); "
            "wait for it to finish or stop it, or pass another --workdir (if that run is "
            f"surely over, e.g. on a host that was lost, delete {self.path})")

    def release(self) -> None:
        """Empties the lock file and releases the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # a full or vanished disk: the kernel still unlocks
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_free(workdir: str) -> None:
    """Raises WorkdirBusyError when a live run holds `workdir`'s lock; reads only, creates nothing.

    The early check a run makes before building anything slow, so that a second run on a workdir
    in use stops within seconds; `hold` then takes the lock itself.
    """
    try:
        fd = os.open(os.path.join(os.path.abspath(workdir), LOCK_FILE), os.O_RDONLY)
    except OSError:
        return  # no lock file yet (or unreadable): `hold` decides
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read(fd)
            if error.errno not in _NO_FLOCK or (holder is not None
                                                and holder.is_alive() is not False):
                raise WorkdirLock(workdir).busy(holder) from None
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[Optional[WorkdirLock]]:
    """Holds the workdir's lock for the duration (process 0 only; None on other processes).

    On a multi-process run every process learns whether process 0 got the lock, so a busy
    workdir stops the job on every host with WorkdirBusyError.
    """
    import jax  # pylint: disable=g-import-not-at-top
    lock, failure = None, None
    if jax.process_index() == 0:
        lock = WorkdirLock(workdir)
        try:
            lock.acquire()
        except CheckpointError as error:
            failure = error
    if jax.process_count() > 1:
        import numpy as np  # pylint: disable=g-import-not-at-top
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        refused = int(multihost_utils.broadcast_one_to_all(np.int32(failure is not None)))
        if refused and failure is None:
            failure = WorkdirBusyError(f"--workdir={os.path.abspath(workdir)}: process 0 could "
                                       "not lock it (its error names the holder)")
    if failure is not None:
        raise failure
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
