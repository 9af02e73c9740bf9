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

