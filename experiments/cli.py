"""Runs an absl main so that user errors print as one line and exit with status 2."""
import functools
import logging as std_logging
import os
import sys
from typing import Callable, Optional

from absl import app, logging

from kale_jax.errors import UserError

USER_ERROR_STATUS = 2


def run(main: Callable) -> None:
    """Like `absl.app.run(main)`, but a `kale_jax.errors.UserError` prints one line and exits 2
    (or the error's own `exit_status`, e.g. 3 for NonFiniteError). Other exceptions keep their
    traceback (exit status 1)."""

    @functools.wraps(main)
    def guarded(argv):
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(getattr(error, "exit_status", USER_ERROR_STATUS))

    app.run(guarded)


class _QuietOrbax:
    """Drops orbax's INFO chatter (a dozen lines per checkpoint save); its warnings stay."""

    def filter(self, record) -> bool:
        return record.levelno > std_logging.INFO or "orbax" not in record.pathname


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
