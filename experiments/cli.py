"""Runs an absl main so that user errors print as one line and exit with status 2."""
import functools
import sys
from typing import Callable

from absl import app

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
