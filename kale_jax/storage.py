"""Write failures of a run: recognising them, reporting them in one line, writing whole lines and
whole files.

A training run writes checkpoints (orbax, partly in background threads), metrics rows, pictures,
TensorBoard events and config.json into its workdir. Any of these writes can fail: a full disk
(ENOSPC), a quota (EDQUOT), a file system remounted read-only, a vanished network mount. Each write
site runs inside `writing(what, path)`, which turns such a failure into `WriteFailed` (an OSError
naming what could not be written and where); the training loops catch WriteFailed at the step
boundary, stop, and raise kale_jax.errors.StorageError (exit status 4) built by `run_stopped`,
which adds the free space left, the last complete checkpoint and how to resume.

Files are never left half-written: `append_line` cuts a partly written line off again and
`write_atomically` writes through a temporary file and a rename.

`simulate_full_disk` makes every new `writing` block fail with ENOSPC
(config.debug.full_disk_at_step, for tests that cannot mount a small file system). Nothing is
written at import.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from typing import Iterator, Optional

from kale_jax.errors import StorageError

# What a write failure looks like when it arrives as text: TensorStore (orbax's array writer)
# raises ValueError('RESOURCE_EXHAUSTED: ... [os_error_code=28]'), TensorFlow its own types.
_WRITE_FAILURE_TEXT = re.compile(
    r"os_error_code|No space left on device|Disk quota exceeded|Read-only file system|"
    r"Input/output error|RESOURCE_EXHAUSTED|Failed writing|Error writing|Stale file handle|"
    r"File too large")
_OS_ERROR_CODE = re.compile(r"os_error_code\D{0,3}(\d+)")
# The OS's words for the errnos of a failed write, as they appear in other libraries' messages.
_STRERROR = {os.strerror(code): code for code in (
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ESTALE, errno.EFBIG)}

_simulated_full_disk = False


class WriteFailed(OSError):
    """A write to the workdir failed.

    Attributes:
      what: what could not be written, e.g. 'checkpoint step 200', 'a metrics row'.
      path: the file or directory written.
      reason: the cause in a few words (the OS's message when it has an errno).
    """

    def __init__(self, what: str, path: str, cause: BaseException):
        code = error_number(cause)
        self.what, self.path = what, path
        self.reason = os.strerror(code) if code is not None else _one_line(cause)
        super().__init__(code, self.reason, path)

    def __str__(self) -> str:
        return f"cannot write {self.what} ({self.path}): {self.reason}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its causes and contexts (at most 10)."""
    seen = 0
    while error is not None and seen < 10:
        yield error
        error = error.__cause__ or error.__context__
        seen += 1


def is_write_failure(error: BaseException) -> bool:
    """Whether `error` (or its cause) is a failed write: an OSError, or an error whose text is the
    storage layer's report of one (TensorStore's RESOURCE_EXHAUSTED ... os_error_code=28)."""
    return any(isinstance(e, OSError) or _WRITE_FAILURE_TEXT.search(str(e))
               for e in _chain(error))


def error_number(error: BaseException) -> Optional[int]:
    """The errno of a write failure (from an OSError or TensorStore's os_error_code), or None."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno:
            return e.errno
        match = _OS_ERROR_CODE.search(str(e))
        if match:
            return int(match.group(1))
        for words, code in _STRERROR.items():  # e.g. TensorFlow's ResourceExhaustedError
            if words in str(e):
                return code
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def simulate_full_disk(on: bool) -> None:
    """Makes every `writing` block fail with ENOSPC (on=True) or not (False). For tests only
    (config.debug.full_disk_at_step); the training loops switch it off when they return."""
    global _simulated_full_disk
    _simulated_full_disk = bool(on)


@contextlib.contextmanager
def reporting(what: str, path: str) -> Iterator[None]:
    """Within: a write failure raises WriteFailed(what, path, cause); other errors pass through.

    Args:
      what: what is written, for the message ('a metrics row', 'checkpoint step 200').
      path: the file or directory written.
    """
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:  # pylint: disable=broad-except
        if is_write_failure(error):
            raise WriteFailed(what, path, error) from error
        raise


@contextlib.contextmanager
def writing(what: str, path: str) -> Iterator[None]:
    """`reporting(what, path)` around a new write; fails at once while `simulate_full_disk` is
    on (waiting for a write started earlier uses `reporting` alone)."""
    with reporting(what, path):
        if _simulated_full_disk:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        yield


def append_line(path: str, line: str, what: str = "a line") -> None:
    """Appends `line` (ending in a newline) to `path` whole, or not at all.

    A write that fails part-way (ENOSPC after some bytes, an interrupt) is cut off again, so the
    file never holds half a line.

    Raises:
      WriteFailed: the line could not be written (the file is as it was).
    """
    data = memoryview(line.encode("utf-8"))
    with writing(what, path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data):]
            except BaseException:
                with contextlib.suppress(OSError):  # shrinking a file needs no free space
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def write_atomically(path: str, content, what: str = "a file") -> None:
    """Writes `content` (str or bytes) to `path` through a temporary file and a rename: a kill or
    a full disk leaves the old file or the new one, never half of one (nor the temporary file).

    Raises:
      WriteFailed: the file could not be written.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    with writing(what, path):
        try:
            with open(temporary, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise


def _nearest_existing(path: str) -> str:
    """`path` if it exists, else its nearest existing parent."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def free_bytes(path: str) -> Optional[int]:
    """Free bytes (for this user) on the file system holding `path` or its nearest existing
    parent; None when that cannot be read."""
    probe = _nearest_existing(path)
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def block_bytes(path: str) -> int:
    """The allocation block of the file system holding `path` or its nearest existing parent
    (4096 when it cannot be read): the least a non-empty file takes on disk."""
    probe = _nearest_existing(path)
    try:
        return os.statvfs(probe).f_frsize or 4096
    except (OSError, AttributeError):
        return 4096


def disk_bytes(path: str) -> int:
    """Bytes a file or directory tree takes on disk (allocated blocks), 0 if it is gone."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(root, name))
                total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    return total


def human_bytes(count: Optional[int]) -> str:
    """'512 B', '12.0 KiB', '3.4 MiB', '1.2 GiB'; 'unknown' for None."""
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # not reached


def run_stopped(failure: WriteFailed, *, workdir: str, checkpoint_dir: str,
                committed_step: Optional[int]) -> StorageError:
    """The one-line StorageError of a run stopped by `failure`.

    Args:
      failure: the write that failed.
      workdir: the run's workdir (where free space is measured).
      checkpoint_dir: the run's checkpoint directory.
      committed_step: the last checkpoint step known to be complete, None when there is none.
    """
    if committed_step is None:
        last, resume = "none", "it starts afresh"
    else:
        last, resume = f"step {committed_step} in {checkpoint_dir}", "it resumes from there"
    return StorageError(
        f"{failure}; {human_bytes(free_bytes(workdir))} free in {workdir}. Stopped; last complete "
        f"checkpoint: {last}. Free some space (or move the workdir to a larger disk) and rerun "
        f"the same command: {resume}")
