"""Stopping a run on SIGTERM / SIGINT at a step boundary that every process agrees on.

    stop = StopSignal(trainer.parallel.mesh)
    stop.install()                  # main thread: SIGTERM and SIGINT set the local flag
    while ...:
        state = step(state)
        if stop.poll():             # once per step boundary, on every process
            save(); break
    stop.uninstall()

One process: `poll` returns the local flag, as read at that boundary (nothing else runs).

Several processes (a pod): a signal usually reaches one host, or the hosts at different times. If
each host stopped on its own flag, hosts would save different steps, or one would wait forever in
a collective (a training step's pmean, a collective checkpoint save) that the others have left.
So at every boundary each process contributes its flag to an all-reduce (max) over the run's mesh,
and acts on the result: all processes get the same value at the same boundary, hence stop
together and save the same step. The reduction launched at boundary t is read at boundary t + 1
(one boundary late): reading it waits only for boundary t's reduction, not for the steps
dispatched after it, so the host still prepares the next step while the devices compute, and a
stop lands one or two steps after the signal. Every process launches exactly one reduction per
boundary and reads them in order, so the collectives always pair up.

Failures travel the same way. A process that hits an error on its own (process 0's write of a
metrics row fails on a full disk: only process 0 writes metrics) must not leave alone, or the
others wait in the next collective until jax aborts them. It calls `fail(status)` instead and
goes on taking part in the collectives; its flag then carries the failure, encoded above any stop
request as (status << 16) | (0xFFFF - process index), so the max names the largest status and,
among equal statuses, the lowest process. When the reduction shows it, `failed` holds (process,
status) on every process, at the same boundary, and all leave the loop there. A collective save
must not be entered by one process only, so before each save the processes `agree` (the same
reduction, read at once) whether any has failed.

Why not JAX's preemption sync point (multihost_utils.reached_preemption_sync_point, enabled by
jax_enable_preemption_service): it learns of a preemption from the coordination service's own
SIGTERM notifier, which does not see SIGINT and competes with Python's handlers for SIGTERM; the
all-reduce needs only the run's own mesh and works on every backend, CPU (gloo) included.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

_FAILED = 1 << 16  # reduced values from here up carry a failure (see the module docstring)


class StopSignal:
    """The stop flag of one process and its agreement with the others.

    Args:
      mesh: the run's 1-D device mesh (every device of every process); used only when the job
        has more than one process.
    Attributes:
      requested: a signal reached this process.
      stopping: the processes agreed to stop (the last value `poll` returned).
      failed: (process index, exit status) of a failure the processes agreed on (the lowest
        process among those with the largest status), or None.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, mesh: Optional[jax.sharding.Mesh] = None):
        self.requested = False
        self.stopping = False
        self.failed = None
        self._status = 0  # exit status of this process's own failure (0: none)
        self._previous = None
        self._pending: Optional[jax.Array] = None  # the reduction of the last boundary
        self._reduce = None
        if mesh is not None and jax.process_count() > 1:
            axis = mesh.axis_names[0]
            self._flags_sharding = NamedSharding(mesh, PartitionSpec(axis))
            self._num_local = sum(d.process_index == jax.process_index()
                                  for d in mesh.devices.flat)
            self._reduce = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))

    # ------------------------------------------------------------------------------- signals
    def install(self) -> None:
        """Makes SIGTERM and SIGINT set `requested` (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        del frame
        logging.warning("Received signal %d: saving a checkpoint and stopping at the next step "
                        "boundary.", signum)
        self.requested = True
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def uninstall(self) -> None:
        """Puts the previous handlers back."""
        if self._previous is not None:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = None

    # ------------------------------------------------------------------------------ agreement
    def poll(self) -> bool:
        """Whether to stop at this step boundary; call it once per boundary on every process.

        Returns:
          one process: `requested`. Several: whether any process had its flag set at the
          previous boundary (the same answer on every process). Once True, stays True. A failure
          read here sets `failed` instead (check it first: leave the loop without saving).
        """
        if self._reduce is None or self.stopping or self.failed is not None:
            self.stopping = self.stopping or self.requested
            return self.stopping
        previous, self._pending = self._pending, self._launch(self._code())
        if previous is not None:
            value = int(np.asarray(previous.addressable_data(0)))
            if value >= _FAILED:
                self._decode_failure(value)
            elif value:
                self.stopping = True
                if not self.requested:
                    logging.warning("Another process received a stop signal: saving a "
                                    "checkpoint and stopping at this step boundary with every "
                                    "process.")
        return self.stopping

    # ------------------------------------------------------------------------------- failures
    def fail(self, status: int) -> None:
        """Marks this process as failed with exit status `status` (2 .. 32767); the others learn
        of it through `poll` or `agree`. The first failure counts."""
        if not 2 <= status < 1 << 15:
            raise ValueError(f"exit status {status} is not in 2 .. 32767")
        self._status = self._status or status
        if self._reduce is None:  # one process: nobody else to tell
            self.failed = self.failed or (jax.process_index(), self._status)

    def agree(self) -> bool:
        """Whether any process has failed, read now (blocks until every process asks); call it
        on every process before each collective save. Sets `failed`. Stop requests are left to
        `poll`.

        Returns:
          one process: whether it failed itself (nothing is dispatched). Several: whether any
          process had called `fail` (the same answer on every process).
        """
        if self._reduce is not None and self.failed is None:
            value = int(np.asarray(self._launch(self._code()).addressable_data(0)))
            if value >= _FAILED:
                self._decode_failure(value)
        return self.failed is not None

    def _code(self) -> int:
        """This process's contribution to the reduction: 0, 1 (stop requested) or a failure."""
        if self._status:
            return self._status << 16 | (0xFFFF - jax.process_index())
        return int(self.requested)

    def _decode_failure(self, value: int) -> None:
        self.failed = (0xFFFF - (value & 0xFFFF), value >> 16)

    def _launch(self, flag: int) -> jax.Array:
        """Starts max over processes of `flag` (asynchronous; a replicated int32 scalar)."""
        local = np.full((self._num_local,), int(flag), np.int32)
        flags = jax.make_array_from_process_local_data(self._flags_sharding, local)
        return self._reduce(flags)

