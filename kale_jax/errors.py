"""Errors a user can fix. The binaries print them as one line on stderr and exit with status 2
(NonFiniteError: status 3; StorageError: status 4; JobFailedError: the failed process's status).

Anything else that escapes a binary is an internal error and keeps its traceback. Each message
names what is wrong (config key and value, file path) and the fix (allowed values, the command
that makes the missing file).
"""


class UserError(Exception):
    """Bad input the user can fix; printed as one line without a traceback."""


class ConfigError(UserError, ValueError):
    """A config value is unknown, out of range or incompatible (with the devices, a checkpoint)."""


class DataError(UserError, ValueError):
    """A dataset, weights or statistics file is missing, truncated or has the wrong format."""


class CheckpointError(UserError):
    """A workdir or checkpoint cannot be used (unreadable, no complete checkpoint, mismatch)."""


class WorkdirBusyError(CheckpointError):
    """Another live run holds the workdir's lock (kale_jax.workdir_lock); nothing was written."""


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a non-finite loss or parameter; nothing non-finite was saved.

    The message names the base step and the last good checkpoint. The binaries exit with status 3
    (not 2), so a job scheduler can tell a diverged run (rerunning the same config will diverge
    again: lower the learning rates or change the penalty) from a bad config.
    """

    exit_status = 3


class StorageError(UserError, OSError):
    """A write to the workdir failed (full disk, quota, read-only or vanished file system).

    Raised by a training run at the step boundary after the failed write (a checkpoint, a metrics
    row, a picture, an event file). The message names what failed, the free space left, the last
    complete checkpoint and how to resume. The binaries exit with status 4, so a job scheduler
    can tell a storage fault (rerunning once there is space resumes exactly) from a bad config (2)
    and a diverged run (3).
    """

    exit_status = 4


class JobFailedError(UserError):
    """Another process of a multi-process job failed, and this one stopped with it.

    Raised on every process but the failing one, at the step boundary where the processes agreed
    to stop (kale_jax.train.stop). The message names the failed process, its exit status and the
    last complete checkpoint; the binaries exit with that same status, so every process of the job
    reports the same one.

    Args:
      message: the one-line message.
      exit_status: the failed process's exit status.
    """

    MEANING = {2: "a user error", 3: "training diverged",
               4: "a write to the workdir failed"}

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status
