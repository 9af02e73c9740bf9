"""Fault injection for tests, from config.debug: a NaN step, a full disk, slow steps.

    iterate = faults.install(config, trainer.run_iteration, poison)   # the loop's one call
    state, metrics = iterate(state, step, batches)

config.debug (configs/default.py; all off by default):
  nan_at_step        base step k (1, 2, ...) runs with NaN parameters (`poison` applied before it)
  sleep_per_step_s   sleep this long after each step (tests land signals mid-run)
  full_disk_at_step  every workdir write from step k on fails with ENOSPC
                     (kale_jax.storage.simulate_full_disk; the run loop switches it off on exit),
                     on every process of a job: as a shared disk would, it fails process 0's
                     metrics and pictures, and every process's checkpoint saves
Without config.debug, or with every switch off, `install` returns the iteration unchanged.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from kale_jax import checks, storage

Iterate = Callable[[Any, int, Any], Any]


def _switches(config: Mapping[str, Any]) -> dict:
    debug = config.get("debug") or {}
    return {"nan_at_step": debug.get("nan_at_step", None),
            "sleep_per_step_s": debug.get("sleep_per_step_s", None),
            "full_disk_at_step": debug.get("full_disk_at_step", None)}


def check(config: Mapping[str, Any]) -> None:
    """Raises ConfigError for a bad config.debug switch (each optional; -1 / 0 mean off)."""
    switches = _switches(config)
    checks.check_int(switches["nan_at_step"], "config.debug.nan_at_step", minimum=-1,
                     allow_none=True)
    checks.check_positive(switches["sleep_per_step_s"], "config.debug.sleep_per_step_s",
                          allow_zero=True, allow_none=True)
    checks.check_int(switches["full_disk_at_step"], "config.debug.full_disk_at_step",
                     minimum=-1, allow_none=True)


def install(config: Mapping[str, Any], iterate: Iterate,
            poison: Callable[[Any], Any]) -> Iterate:
    """`iterate` with config.debug's faults around it (the same function when none is on).

    Args:
      config: the full config (reads config.debug when present).
      iterate: (state, step, batches) -> (state, metrics), training iteration `step` (0-based).
      poison: state -> the state with NaN parameters.
    Returns:
      a function like `iterate`: before iteration step + 1 == nan_at_step it poisons the state;
      after each iteration it sleeps sleep_per_step_s and, from step full_disk_at_step on, makes
      every write fail.
    """
    check(config)
    switches = _switches(config)
    nan_at = switches["nan_at_step"]
    sleep = switches["sleep_per_step_s"] or 0.0
    full_disk_at = switches["full_disk_at_step"] or -1
    if not (nan_at is not None and nan_at > 0) and not sleep and full_disk_at <= 0:
        return iterate

    def faulty(state, step, batches):
        if step + 1 == nan_at:  # step nan_at computes with NaNs
            state = poison(state)
        state, metrics = iterate(state, step, batches)
        if sleep:
            time.sleep(sleep)
        if full_disk_at > 0:  # every write from step full_disk_at on fails
            storage.simulate_full_disk(step + 1 >= full_disk_at)
        return state, metrics

    return faulty
