"""experiments.progress: rate and ETA (on a controlled clock), log lines off a terminal, one tqdm
line updated in place on a terminal."""
import io
import re

from absl import logging as absl_logging

from experiments import progress


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_rate_leaves_out_the_first_chunk_and_eta_follows(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    logged = []
    monkeypatch.setattr(absl_logging, "info", lambda fmt, *args: logged.append(fmt % args))
    shown = progress.Progress(100, "beta 1", stream=io.StringIO())
    assert not shown.on_terminal
    clock.now += 10.0  # the first chunk: compilation and 10 samples
    shown.update(10)
    assert shown.rate() == 1.0  # one update: all the time so far
    clock.now += 2.0
    shown.update(10)
    # After it, 10 samples in 2 s: 5 samples/s, 80 left: 16 s.
    assert shown.line() == "beta 1: 20/100 samples (20.0%), 5 samples/s, ETA 0m16s"
    assert logged == ["beta 1: 10/100 samples (10.0%), 1 samples/s, ETA 1m30s", shown.line()]
    shown.close()


def test_terminal_gets_one_updating_tqdm_line_and_no_log_lines(monkeypatch):
    logged = []
    monkeypatch.setattr(absl_logging, "info", lambda fmt, *args: logged.append(fmt % args))
    terminal = _Terminal()
    shown = progress.Progress(16, "beta 2", stream=terminal)
    assert shown.on_terminal
    shown.update(8)
    shown.update(8)
    shown.close()
    text = terminal.getvalue()
    assert "\r" in text and "beta 2" in text and "samples/s" in text
    assert re.search(r"16(\.0)?/16(\.0)?", text), text
    assert text.count("\n") <= 1 and not logged


def test_format_duration():
    assert progress.format_duration(0) == "0m00s"
    assert progress.format_duration(61.4) == "1m01s"
    assert progress.format_duration(3723) == "1h02m03s"
    assert progress.format_duration(float("inf")) == "?"
