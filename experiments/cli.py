"""Runs an absl main so that user errors print as one line and exit with a documented status.

Exit statuses of the binaries:
  0  done (also after SIGTERM / Ctrl-C, which save a checkpoint first)
  1  an internal error (a bug): its traceback is printed
  2  a user error (bad config, flags, data, workdir, or the workdir is in use by another run)
  3  training diverged (kale_jax.errors.NonFiniteError)
  4  a write to the workdir failed, e.g. a full disk (kale_jax.errors.StorageError); rerunning
     the same command once there is space resumes from the last complete checkpoint
"""
import functools
import logging as std_logging
import os
import sys
from typing import Callable, Optional

from absl import app, logging

from kale_jax.errors import NonFiniteError, StorageError, UserError

USER_ERROR_STATUS = 2
DIVERGED_STATUS = NonFiniteError.exit_status  # 3
STORAGE_ERROR_STATUS = StorageError.exit_status  # 4


def run(main: Callable) -> None:
    """Like `absl.app.run(main)`, but a `kale_jax.errors.UserError` prints one line and exits 2
    (or the error's own `exit_status`: 3 for NonFiniteError, 4 for StorageError). Other
    exceptions keep their traceback (exit status 1)."""

    @functools.wraps(main)
    def guarded(argv):
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(getattr(error, "exit_status", USER_ERROR_STATUS))

    app.run(guarded)


class _QuietOrbax:
    """Drops orbax's INFO chatter (a dozen lines per checkpoint save) and its tracebacks of a
    failed write (several per failed save: kale_jax.checkpoint raises the failure, which the
    binary reports in one line, exit status 4); its other warnings and errors stay."""

    def filter(self, record) -> bool:
        if "orbax" not in record.pathname:
            return True
        if record.levelno <= std_logging.INFO:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            from kale_jax import storage  # pylint: disable=g-import-not-at-top
            return not storage.is_write_failure(record.exc_info[1])
        return True


def quiet_orbax_logs() -> None:
    """Keeps orbax's INFO lines out of the binary's absl log (call from main, after flags)."""
    logging.get_absl_handler().addFilter(_QuietOrbax())


def cpu_devices_hint(backend: str, num_devices: int, num_cores: Optional[int]) -> Optional[str]:
    """The advice to run one CPU device per core, when a CPU-only run has fewer devices than cores
    (XLA:CPU gives much of a convolution's work to one thread; README, Performance), else None."""
    if backend != "cpu" or not num_cores or num_devices >= num_cores:
        return None
    return (f"CPU-only run on {num_devices} device(s) and {num_cores} cores: convolutional "
            f"networks run faster data-parallel over one CPU device per core; set "
            f"JAX_NUM_CPU_DEVICES={num_cores} (the batch must be a multiple of it).")


def log_cpu_devices_hint() -> None:
    """Logs cpu_devices_hint for this process's backend, if any."""
    import jax  # pylint: disable=g-import-not-at-top
    hint = cpu_devices_hint(jax.default_backend(), jax.local_device_count(), os.cpu_count())
    if hint:
        logging.info(hint)
