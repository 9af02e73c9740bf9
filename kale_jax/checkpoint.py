"""Checkpoints of training runs: a thin wrapper over orbax's CheckpointManager.

Layout: DIRECTORY/<step>/ holds one pytree (the TrainState, saved with StandardSave) and
DIRECTORY/metadata/ the run's root metadata, a JSON dict that names the config the run came from
(the full config as JSON, and the config file and overrides when a binary passes them), written by
the first run in the directory; each step can carry its own metadata too (the config of the run
that saved it, which a resumed run may have changed, e.g. num_steps). Saves are
asynchronous: `save` returns once the arrays are copied off the devices, and `wait` blocks until
they are on disk. Steps are base steps.

Nothing is read or written at import.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
    """Saves and restores a run's state in `directory` (created if absent).

    Args:
      directory: where the checkpoints live (made absolute).
      keep: how many of the latest checkpoints to keep (None keeps all).
      metadata: JSON-serialisable root metadata, written once with the first save (e.g. the
        config); read it back with `metadata()`.
      async_save: save in a background thread (call `wait` before exiting).
    """

    def __init__(self, directory: str, *, keep: Optional[int] = None,
                 metadata: Optional[Mapping[str, Any]] = None, async_save: bool = True):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be None or >= 1, got {keep!r}")
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              metadata=dict(metadata) if metadata else None)

    def latest_step(self) -> Optional[int]:
        """The newest saved step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> Sequence[int]:
        """Every saved step, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, metadata: Optional[Mapping[str, Any]] = None) -> bool:
        """Saves `state` (a pytree of arrays) as step `step` (asynchronously).

        Args:
          step: the step number (base steps for training runs).
          state: pytree of arrays.
          metadata: JSON-serialisable metadata of this step (e.g. the config of the run that
            saved it); read it back with `step_metadata(step)`.
        Returns:
          False when `step` is already saved (nothing is written), True otherwise.
        """
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=True,
                                  custom_metadata=dict(metadata) if metadata else None)

    def restore(self, step: Optional[int] = None, target: Any = None) -> Any:
        """Restores step `step` (default: the latest).

        Args:
          step: the step to restore; None for the latest.
          target: a pytree like the saved one, of arrays or jax.ShapeDtypeStruct (with a
            `sharding` to restore onto specific devices); gives the result its structure (e.g. a
            TrainState). None returns nested dicts of arrays.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if target is not None:
            target = jax.tree_util.tree_map(_abstract, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def metadata(self) -> Dict[str, Any]:
        """The root metadata given at the first save ({} if none)."""
        return dict(self._manager.metadata().custom_metadata or {})

    def step_metadata(self, step: Optional[int] = None) -> Dict[str, Any]:
        """The metadata saved with step `step` (default: the latest; {} if none)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return dict(self._manager.metadata(step).custom_metadata or {})

    def wait(self) -> None:
        """Blocks until every pending save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def all_finite(tree: Any) -> bool:
    """True when every floating-point leaf of `tree` is finite (host check, syncs devices)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        leaf = np.asarray(jax.device_get(leaf))
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            return False
    return True
