"""Tests of kale_jax.train.faults: config.debug's faults wrap a training iteration (no training
here: the iteration is a counter, the state a number)."""
import time

import ml_collections
import pytest

from kale_jax import storage
from kale_jax.errors import ConfigError
from kale_jax.train import faults


def _config(**debug):
    config = ml_collections.ConfigDict()
    if debug:
        config.debug = ml_collections.ConfigDict(debug)
    return config


def _iterate(state, step, batches):
    del batches
    return state + 1.0, {"step": step}


def _poison(state):
    return float("nan")


def test_no_faults_leave_the_iteration_unchanged():
    assert faults.install(_config(), _iterate, _poison) is _iterate
    off = _config(nan_at_step=-1, sleep_per_step_s=0.0, full_disk_at_step=-1)
    assert faults.install(off, _iterate, _poison) is _iterate


def test_nan_step_full_disk_and_sleep():
    iterate = faults.install(_config(nan_at_step=3, full_disk_at_step=2, sleep_per_step_s=0.01),
                             _iterate, _poison)
    state, failing, started = 0.0, [], time.monotonic()
    try:
        for step in range(4):
            state, metrics = iterate(state, step, None)
            assert metrics == {"step": step}
            if step + 1 < 3:  # steps 1 and 2 run on a clean state
                assert state == step + 1.0
            try:  # a write after step `step + 1`
                with storage.writing("a row", "/nonexistent/row"):
                    pass
                failing.append(False)
            except storage.WriteFailed:
                failing.append(True)
    finally:
        storage.simulate_full_disk(False)
    assert state != state  # step 3 ran on NaN parameters (and step 4 kept them)
    assert failing == [False, True, True, True]  # every write from step 2 on fails
    assert time.monotonic() - started >= 4 * 0.01


@pytest.mark.parametrize("key, value, allowed", [
    ("nan_at_step", -2, ">= -1"), ("nan_at_step", 1.5, "integer"),
    ("sleep_per_step_s", -1.0, ">= 0"), ("full_disk_at_step", True, "integer")])
def test_bad_switches_are_config_errors(key, value, allowed):
    with pytest.raises(ConfigError) as error:
        faults.install(_config(**{key: value}), _iterate, _poison)
    message = str(error.value)
    assert message.startswith(f"config.debug.{key}={value!r}") and allowed in message
