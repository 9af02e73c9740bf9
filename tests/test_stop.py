"""kale_jax.train.stop in one process: signals set the flag, poll reads it, handlers come back.

The agreement between processes (one process signalled, every process stops at the same step)
runs in tests/test_multihost.py with a real 2-process job.
"""
import os
import signal

import jax
import pytest

from kale_jax.train import parallel, stop


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_flag_and_poll_reads_it(signum):
    previous = signal.getsignal(signum)
    flag = stop.StopSignal(parallel.DataParallel("shard_map").mesh)  # one process: no all-reduce
    flag.install()
    try:
        assert flag.poll() is False and not flag.stopping
        os.kill(os.getpid(), signum)  # handled before the next bytecode of this thread
        assert flag.requested
        assert flag.poll() is True and flag.stopping
        assert flag.poll() is True  # stays set
    finally:
        flag.uninstall()
    assert signal.getsignal(signum) is previous


def test_second_sigint_interrupts_at_once():
    flag = stop.StopSignal()
    flag.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()


def test_no_reduction_in_a_single_process_run():
    """A single-process run keeps its behaviour and speed: nothing is compiled or dispatched."""
    assert jax.process_count() == 1
    flag = stop.StopSignal(parallel.DataParallel("shard_map").mesh)
    assert flag._reduce is None  # pylint: disable=protected-access



def test_a_failure_in_a_single_process_run_is_its_own():
    """One process: `fail` needs no agreement (nothing is dispatched); `agree` reports it, and
    the first failure counts. A status that is not an error's (0, 1) is refused."""
    flag = stop.StopSignal(parallel.DataParallel("shard_map").mesh)
    assert flag.agree() is False and flag.failed is None
    flag.fail(4)
    flag.fail(3)
    assert flag.agree() is True and flag.failed == (0, 4)
    assert flag.poll() is False  # a failure is not a stop request
    with pytest.raises(ValueError, match="not in 2 .. 32767"):
        flag.fail(1)


def _failure_code(status, process, monkeypatch) -> int:
    """What process `process`, failed with `status`, contributes to the boundary reduction."""
    monkeypatch.setattr(jax, "process_index", lambda: process)
    flag = stop.StopSignal()
    flag.fail(status)
    return flag._code()  # pylint: disable=protected-access


@pytest.mark.parametrize("status, process", [(2, 0), (4, 0), (4, 7), (32767, 65535)])
def test_a_failure_code_names_its_process_and_status(status, process, monkeypatch):
    """The reduced value of a failure decodes to (process, status) and is an int32 above any
    stop request (1); the max of two failures names the larger status, then the lower process."""
    code = _failure_code(status, process, monkeypatch)
    assert 1 < code < 2 ** 31
    flag = stop.StopSignal()
    flag._decode_failure(code)  # pylint: disable=protected-access
    assert flag.failed == (process, status)
    if process > 0:
        assert _failure_code(status, process - 1, monkeypatch) > code
    if status > 2:
        assert _failure_code(status - 1, 0, monkeypatch) < code
