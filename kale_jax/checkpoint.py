"""Checkpoints of training runs: a thin wrapper over orbax's CheckpointManager.

Layout: DIRECTORY/<step>/ holds one pytree (the TrainState, saved with StandardSave) and
DIRECTORY/metadata/ the run's root metadata, a JSON dict that names the config the run came from
(the full config as JSON, and the config file and overrides when a binary passes them), written by
the first run in the directory; each step can carry its own metadata too (the config of the run
that saved it, which a resumed run may have changed, e.g. num_steps). Saves are
asynchronous: `save` returns once the arrays are copied off the devices, and `wait` blocks until
they are on disk. Steps are base steps.

Crash safety (orbax 0.12, local and network file systems): a step is written into
DIRECTORY/<step>.orbax-checkpoint-tmp-<timestamp>/ and renamed to DIRECTORY/<step>/ only when
complete (on object stores such as GCS, where a rename is not atomic, orbax marks completion with a
commit_success.txt file instead). A process killed in the middle of a save leaves only that
temporary directory, which orbax ignores when listing steps and which is deleted when the
directory is next opened. A complete step that was damaged later (a truncated file, a bad disk)
is found by `restore_newest_readable`, which falls back to the previous step and moves the damaged
one to DIRECTORY.unreadable/<step>/ so that it is kept for inspection and never read again.
Nothing is ever unpickled: orbax stores arrays with TensorStore and metadata as JSON.

Honest saves: `save` logs "Saving checkpoint at step N started." and returns while the step is
still being written; "Saved checkpoint at step N." is logged only once the step is committed (its
final directory is in place), which `poll` (non-blocking, at each step boundary), `wait`, the
next `save` and `close` find out. `committed_step` is the newest step known to be complete. A save
that fails (a full disk: orbax's background write raises RESOURCE_EXHAUSTED) raises
kale_jax.storage.WriteFailed from the call that finds out, after its temporary directory is
removed; the steps committed before it are untouched. After each commit the free space is compared
with the size of that step, and a warning says so when the next save will not fit.

One writer per directory: a second process saving into the same directory (or opening it
without read_only, which deletes temporary directories) would break the first one's saves; the
training loops hold kale_jax.workdir_lock first. Readers (experiments.sample) open the directory
with read_only=True, which writes and deletes nothing.

Nothing is read or written at import.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging as std_logging
import os
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from absl import logging

from kale_jax import storage
from kale_jax.errors import CheckpointError

UNREADABLE_SUFFIX = ".unreadable"
TMP_MARK = ".orbax-checkpoint-tmp"  # in the names of orbax's temporary directories
# The next save is expected to need at most _FIT_MARGIN times the largest committed step plus
# one file system block per array: sizes vary with compression, and OCDBT packs the arrays into
# a varying number of data files (6 to 20 files for the same 40 arrays), each rounded up to whole
# blocks, so a small state's steps differ by up to 2x on disk.
_FIT_MARGIN = 1.1


class Checkpoints:
    """Saves and restores a run's state in `directory` (created if absent).

    Args:
      directory: where the checkpoints live (made absolute).
      keep: how many of the latest checkpoints to keep (None keeps all).
      metadata: JSON-serialisable root metadata, written once with the first save (e.g. the
        config); read it back with `metadata()`.
      async_save: save in a background thread (call `wait` before exiting).
      read_only: only read: nothing in `directory` is created, changed or deleted (not even a
        temporary directory that another process is writing); `save` is refused.
    """

    def __init__(self, directory: str, *, keep: Optional[int] = None,
                 metadata: Optional[Mapping[str, Any]] = None, async_save: bool = True,
                 read_only: bool = False):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be None or >= 1, got {keep!r}")
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        # What a save killed half-way left behind is dropped here (discard_temporary, below), not
        # by orbax's cleanup_tmp_directories: that runs in a thread that close() does not join,
        # so a run stopping at once (a refused resume) could exit while it still ran.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=False, read_only=read_only, create=not read_only)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            metadata=dict(metadata) if metadata and not read_only else None)
        self._pending: Optional[int] = None  # the step being saved, not yet known committed
        self._failed = False  # the last save failed (reported by WriteFailed)
        self._largest_size: Optional[int] = None  # bytes on disk of the largest committed step
        self._num_arrays = 0  # leaves of the last state saved
        self._warned_full = False
        self._policy = contextlib.ExitStack()
        self.committed_step: Optional[int] = self._manager.latest_step()
        self.discard_temporary()

    def latest_step(self) -> Optional[int]:
        """The newest saved step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> Sequence[int]:
        """Every saved step, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, metadata: Optional[Mapping[str, Any]] = None) -> bool:
        """Saves `state` (a pytree of arrays) as step `step` (asynchronously).

        Args:
          step: the step number (base steps for training runs).
          state: pytree of arrays.
          metadata: JSON-serialisable metadata of this step (e.g. the config of the run that
            saved it); read it back with `step_metadata(step)`.
        Returns:
          False when `step` is already saved (nothing is written), True otherwise.
        Raises:
          WriteFailed (kale_jax.storage): this save, or the previous one, could not be written;
            its temporary directory is removed.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read_only; nothing is saved")
        self._confirm()  # the previous save first: its failure is its own, not this one's
        if step in self._manager.all_steps():
            return False
        self._num_arrays = len(jax.tree_util.tree_leaves(state))
        self._check_space(f"checkpoint step {step}")
        logging.info("Saving checkpoint at step %d started.", step)
        # orbax's background writes run on event loops made while the save is pending: a write
        # failing there must not wake a closed loop ("Event loop is closed") nor print the
        # tracebacks of the writes it abandons.
        self._policy.enter_context(_patched_event_loops("save"))
        self._pending = step
        try:
            with storage.writing(f"checkpoint step {step}", os.path.join(self.directory,
                                                                          str(step))):
                return self._manager.save(step, args=ocp.args.StandardSave(state), force=True,
                                          custom_metadata=dict(metadata) if metadata else None)
        except BaseException:
            self._pending = None
            self._failed = True
            self._policy.close()
            _join_background_writes()
            self.discard_temporary()
            raise

    def poll(self) -> None:
        """Confirms a pending save if it has finished (never blocks): logs "Saved checkpoint at
        step N." or raises WriteFailed as `wait` does. Call it at step boundaries."""
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self._confirm()

    def _confirm(self) -> None:
        """Blocks until the pending save (if any) is finished and checks that it is committed."""
        step, self._pending = self._pending, None
        if step is None:
            return
        final = os.path.join(self.directory, str(step))
        try:
            with storage.reporting(f"checkpoint step {step}", final):
                self._manager.wait_until_finished()
                # orbax logs (and does not raise) some failures of the finalisation; the step
                # counts only when its final directory is there and no temporary one is left.
                if not os.path.isdir(final) or self._temporary(step):
                    raise OSError(errno.EIO, f"the save of step {step} was not finalised", final)
        except BaseException:
            self._failed = True
            _join_background_writes()
            self.discard_temporary()
            raise
        finally:
            self._policy.close()
        self._failed = False
        self.committed_step = step
        logging.info("Saved checkpoint at step %d.", step)
        self._largest_size = max(self._largest_size or 0, storage.disk_bytes(final))
        self._check_space("the next checkpoint")

    def _check_space(self, which: str) -> None:
        """Warns (once until space is back) when the next save may not fit in the free space."""
        if self._largest_size is None or jax.process_index() != 0:
            return
        free = storage.free_bytes(self.directory)
        block = storage.block_bytes(self.directory)
        need = int(_FIT_MARGIN * self._largest_size) + self._num_arrays * block
        if free is None or free >= need:
            self._warned_full = False
            return
        if not self._warned_full:
            logging.warning(
                "Low disk space: %s may need up to %s (the largest so far took %s) but only %s "
                "is free in %s; free some space or the save will fail and the run stop (exit "
                "status 4; it resumes from step %s).", which, storage.human_bytes(need),
                storage.human_bytes(self._largest_size), storage.human_bytes(free),
                self.directory, self.committed_step)
            self._warned_full = True

    def _temporary(self, step: Optional[int] = None) -> List[str]:
        """Names of orbax temporary directories in `directory` (of `step` only, if given)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        prefix = "" if step is None else f"{step}{TMP_MARK}"
        return [n for n in names if TMP_MARK in n and n.startswith(prefix)]

    def discard_temporary(self) -> None:
        """Deletes every temporary directory of unfinished saves (process 0). Only the single
        writer of the directory may call it: another process's save in progress would be lost."""
        if self.read_only or jax.process_index() != 0:
            return
        for name in self._temporary():
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def restore(self, step: Optional[int] = None, target: Any = None) -> Any:
        """Restores step `step` (default: the latest).

        Args:
          step: the step to restore; None for the latest.
          target: a pytree like the saved one, of arrays or jax.ShapeDtypeStruct (with a
            `sharding` to restore onto specific devices); gives the result its structure (e.g. a
            TrainState). None returns nested dicts of arrays.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if target is not None:
            target = jax.tree_util.tree_map(_abstract, target)
        with _event_loops_cancel_leftover_tasks():
            return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def restore_newest_readable(
            self, target: Any = None, is_good: Optional[Callable[[Any], bool]] = None
    ) -> Tuple[int, Any, List[Tuple[int, str]]]:
        """Restores the newest step that reads back whole, setting newer unreadable steps aside.

        Args:
          target: as in `restore`.
          is_good: optional check of a restored state (e.g. `all_finite`); a step failing it is
            treated as unreadable.
        Returns:
          (step, state, skipped): the restored step and state, and for each newer step that could
          not be used, (step, one-line reason), newest first. Those steps were moved to
          DIRECTORY.unreadable/<step>/ (by process 0).
        Raises:
          CheckpointError: no step restores (nothing is moved then), or there is no step.
        """
        failures: List[Tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                state = self.restore(step, target=target)
            except Exception as error:  # pylint: disable=broad-except
                # orbax / TensorStore / json raise many types for a damaged file.
                failures.append((step, _one_line(error)))
                continue
            if is_good is not None and not is_good(state):
                failures.append((step, "it holds non-finite values"))
                continue
            for bad, _ in failures:
                self.set_aside(bad)
            return step, state, failures
        if not failures:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be restored (steps "
            f"{[s for s, _ in failures]}); newest, step {failures[0][0]}: {failures[0][1]}. "
            "Use a new --workdir, or restore a backup of that directory")

    def set_aside(self, step: int) -> Optional[str]:
        """Moves step `step` to DIRECTORY.unreadable/<step>[-<time>]/ (process 0 only).

        Returns the new path (None on other processes). Waits for pending saves first.
        """
        self._confirm()
        destination = None
        if jax.process_index() == 0:
            os.makedirs(self.directory + UNREADABLE_SUFFIX, exist_ok=True)
            destination = os.path.join(self.directory + UNREADABLE_SUFFIX, str(step))
            if os.path.exists(destination):
                destination += f"-{int(time.time())}"
            shutil.move(os.path.join(self.directory, str(step)), destination)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
            multihost_utils.sync_global_devices(f"kale_jax set_aside {step}")
        self._manager.reload()
        self.committed_step = self._manager.latest_step()
        return destination

    def metadata(self) -> Dict[str, Any]:
        """The root metadata given at the first save ({} if none)."""
        return dict(self._manager.metadata().custom_metadata or {})

    def step_metadata(self, step: Optional[int] = None) -> Dict[str, Any]:
        """The metadata saved with step `step` (default: the latest; {} if none)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return dict(self._manager.metadata(step).custom_metadata or {})

    def wait(self) -> None:
        """Blocks until every pending save is on disk (logs "Saved checkpoint at step N.").

        Raises:
          WriteFailed (kale_jax.storage): the pending save could not be written.
        """
        self._confirm()

    def close(self) -> None:
        """Waits for pending saves and releases the manager.

        Raises WriteFailed as `wait` does; a failed save that was already reported is not
        raised again.
        """
        try:
            self._confirm()
        finally:
            self._policy.close()
            if self._failed:
                with contextlib.suppress(Exception):  # orbax raises the failed save again
                    self._manager.close()
                # Writes of the failed save still in flight when it was first discarded have
                # finished now (closing joins orbax's threads): discard what they left.
                self.discard_temporary()
            else:
                self._manager.close()


class _ReadOnlyNotices(std_logging.Filter):
    """Drops the warnings orbax logs for every read-only open and restore, which are what
    read_only=True asks for (reading beside a training run), not problems."""

    _EXPECTED = ("Given directory is read only",
                 "CheckpointManagerOptions.read_only=True, setting save_interval_steps=0",
                 'Item "default" was found in the checkpoint, but could not be restored')

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not (record.levelno == std_logging.WARNING
                    and record.getMessage().startswith(self._EXPECTED))


std_logging.getLogger("absl").addFilter(_ReadOnlyNotices())


class _CancelLeftoverTasksOnClose(asyncio.AbstractEventLoopPolicy):
    """Delegates to `inner`, except that the loops it makes cancel their unfinished tasks on close
    (restores) or stay quiet about the writes they abandon (saves).

    Why (restores): orbax runs a restore on a fresh event loop and closes that loop as soon as the
    restore raises (a damaged step). The reads of the other arrays, started together with
    asyncio.gather, are left as pending tasks awaiting TensorStore futures; when such a read
    completes later, TensorStore schedules the task's wake-up on the closed loop, which raises
    "Event loop is closed" in a TensorStore thread (an unraisable exception printed on stderr).
    Cancelling the tasks before the loop closes, as asyncio.run does, cancels their TensorStore
    reads with them; a read that completes while that happens finds the loop closed and has
    nothing left to wake, so its wake-up is dropped.

    Why (saves): a save that fails part-way (a full disk) leaves the same pending tasks, here
    awaiting writes. Cancelling TensorStore writes from a closing loop was seen to deadlock (the
    cancel waited, holding the GIL, for a TensorStore thread that needed it), so a loop made while
    a save is pending is closed as orbax closes it, and only drops a wake-up that arrives after
    the close. Its write tasks that failed or were abandoned ("Task exception was never
    retrieved", "Task was destroyed but it is pending!", with tracebacks, when garbage-collected)
    are the failed save's, which Checkpoints reports: they are not logged. Other errors are.
    """

    def __init__(self, inner: asyncio.AbstractEventLoopPolicy):
        self.inner = inner

    def get_event_loop(self):
        return self.inner.get_event_loop()

    def set_event_loop(self, loop):
        self.inner.set_event_loop(loop)

    def new_event_loop(self):
        loop = self.inner.new_event_loop()
        close, call_soon_threadsafe = loop.close, loop.call_soon_threadsafe
        with _policy_lock:
            cancel_on_close = _policy_users["restore"] > 0

        def quiet_about_abandoned_writes(the_loop, context):
            error = context.get("exception")
            abandoned = (error is None and the_loop.is_closed()
                         and "destroyed but it is pending" in context.get("message", ""))
            if not (abandoned or (error is not None and storage.is_write_failure(error))):
                the_loop.default_exception_handler(context)

        def cancel_leftover_tasks_and_close():
            for _ in range(10):  # a cancelled task may start others while it unwinds
                if loop.is_closed() or loop.is_running():
                    break
                leftover = [task for task in asyncio.all_tasks(loop) if not task.done()]
                if not leftover:
                    break
                for task in leftover:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            close()

        def call_soon_threadsafe_unless_closed(callback, *args, **kwargs):
            try:
                return call_soon_threadsafe(callback, *args, **kwargs)
            except RuntimeError:
                if not loop.is_closed():
                    raise
                # A read or write that completed after its loop was closed (its task cancelled
                # or abandoned): nothing is left to wake.
                return None

        try:
            if cancel_on_close:
                loop.close = cancel_leftover_tasks_and_close
            else:
                loop.set_exception_handler(quiet_about_abandoned_writes)
            loop.call_soon_threadsafe = call_soon_threadsafe_unless_closed
        except AttributeError:  # a loop type without instance attributes is left as it is
            pass
        return loop


_policy_lock = threading.Lock()
_policy_users = {"restore": 0, "save": 0}
_policy_before: Optional[asyncio.AbstractEventLoopPolicy] = None


@contextlib.contextmanager
def _patched_event_loops(kind: str):
    """Within: event loops that orbax creates are those of _CancelLeftoverTasksOnClose, for a
    restore (kind 'restore': they cancel leftover tasks on close) or a save ('save').

    Nests and works from several threads: the policy in force before the first entry is put back
    after the last exit.
    """
    global _policy_before
    with _policy_lock:
        if not any(_policy_users.values()):
            _policy_before = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(_CancelLeftoverTasksOnClose(_policy_before))
        _policy_users[kind] += 1
    try:
        yield
    finally:
        with _policy_lock:
            _policy_users[kind] -= 1
            if not any(_policy_users.values()):
                asyncio.set_event_loop_policy(_policy_before)
                _policy_before = None


def _event_loops_cancel_leftover_tasks():
    """Within: event loops that orbax creates cancel their unfinished tasks when closed."""
    return _patched_event_loops("restore")


def _join_background_writes(timeout: float = 60.0) -> None:
    """Waits (at most `timeout` s in all) for orbax's write threads still running after a failed
    save.

    Why: when one array write of a save fails (a full disk), orbax reports the failure while the
    save's other writes may still be in flight; deleting the temporary directory under them makes
    each fail again (NOT_FOUND) and print a traceback ("Task exception was never retrieved").
    Those writes run in orbax's `_SignalingThread`s and its 'async_save' thread, found here by
    type and name: a later orbax that renames them only loses this wait.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        kind = type(thread)
        if thread is not threading.current_thread() and (
                thread.name == "async_save" or (kind.__name__ == "_SignalingThread"
                                                and kind.__module__.startswith("orbax."))):
            # The plain join: orbax's own join raises the thread's error (already reported).
            threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def all_finite(tree: Any) -> bool:
    """True when every floating-point leaf of `tree` is finite (host check, syncs devices)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        leaf = np.asarray(jax.device_get(leaf))
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            return False
    return True
