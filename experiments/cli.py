"""Runs an absl main so that user errors print as one line and exit with status 2."""
import functools
import logging as std_logging
import sys
from typing import Callable

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
