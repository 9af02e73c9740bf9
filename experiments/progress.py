"""Progress of a long loop in a binary, with rate and ETA: one line updating in place on a
terminal (tqdm), a log line per update otherwise (a log file or a pipe keeps every line)."""
import os
import sys
import time
from typing import Optional, TextIO

from absl import logging

from kale_jax.train.outputs import format_duration


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_size(stream) -> tuple:
    """(columns, rows) of the stream's terminal; (100, 24) for a size unknown or reported as 0
    (a pty nobody sized, where tqdm would print nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 100, 24
    return size.columns or 100, size.lines or 24


class Progress:
    """Counts items done out of `total` and shows rate and ETA.

    On a terminal: a tqdm bar on `stream` (one line, updated in place). Elsewhere: `line()` is
    logged (absl, INFO) at every `update`. The rate leaves out the time before the first update
    (the first chunk's compilation) once there are two updates.

    Args:
      total: number of items (e.g. latent chains).
      description: what is counted, shown first (e.g. 'beta 100').
      unit: the items' name (e.g. 'samples').
      stream: where the bar goes (default sys.stderr); its isatty() chooses the mode.
    """

    def __init__(self, total: int, description: str, unit: str = "samples",
                 stream: Optional[TextIO] = None):
        self.total, self.description, self.unit = int(total), description, unit
        self.done = 0
        self._started = time.monotonic()
        self._first: Optional[tuple] = None  # (items, time) at the first update
        self._now = self._started
        stream = sys.stderr if stream is None else stream
        self._bar = None
        if _is_terminal(stream):
            from tqdm import tqdm  # pylint: disable=g-import-not-at-top
            columns, rows = _terminal_size(stream)
            self._bar = tqdm(total=self.total, desc=description, unit=unit, unit_scale=True,
                             file=stream, ncols=columns, nrows=rows, smoothing=0.3)

    @property
    def on_terminal(self) -> bool:
        return self._bar is not None

    def rate(self) -> float:
        """Items per second (after the first update once there are two; 0 before any)."""
        if self._first is not None and self.done > self._first[0] and \
                self._now > self._first[1]:
            return (self.done - self._first[0]) / (self._now - self._first[1])
        elapsed = self._now - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """'beta 1: 512/50000 samples (1.0%), 83.2 samples/s, ETA 9m55s'."""
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.description}: {self.done}/{self.total} {self.unit} ({percent:.1f}%), "
                f"{rate:.4g} {self.unit}/s, ETA {format_duration(eta)}")

    def update(self, n: int) -> None:
        """Records `n` more items done and shows the progress."""
        self._now = time.monotonic()
        if self._first is None:
            self._first = (self.done + n, self._now)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            logging.info("%s", self.line())

    def close(self) -> None:
        """Ends the terminal line (nothing in log mode)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
