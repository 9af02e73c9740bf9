"""experiments.progress: rate and ETA (on a controlled clock), log lines off a terminal, one tqdm
line updated in place on a real pseudo-terminal."""
import io
import os
import pty
import subprocess
import sys

from absl import logging as absl_logging

from experiments import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


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


def _on_a_pty(code: str) -> bytes:
    """What `python -c code` writes to a fresh pseudo-terminal (no size set, as under `script`
    or some CI runners) as its stdout and stderr."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=slave,
                                   stderr=slave)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0, out
    return out


def test_terminal_gets_one_updating_tqdm_line_and_no_log_lines():
    out = _on_a_pty("import sys, time\n"
                    "from experiments import progress\n"
                    "shown = progress.Progress(16, 'beta 2')\n"
                    "on_terminal = shown.on_terminal\n"
                    "shown.update(8); time.sleep(0.05); shown.update(8); shown.close()\n"
                    "print(on_terminal)\n").decode()
    bar, printed = out.rsplit("\r\n", 2)[:2]
    assert printed == "True" and bar.count("\r") >= 2, out  # updated in place, one line
    assert "beta 2: 100%" in bar and "16.0/16.0" in bar and "samples/s]" in bar, out
    assert "ETA" not in out and "\n" not in bar  # no log lines


def test_format_duration():
    assert progress.format_duration(0) == "0m00s"
    assert progress.format_duration(61.4) == "1m01s"
    assert progress.format_duration(3723) == "1h02m03s"
    assert progress.format_duration(float("inf")) == "?"
