"""Data parallelism: one per-device step function, run over all devices by shard_map or pmap.

The training steps (steps.py) are written once, for one device's shard of the global batch, with
collectives over the axis AXIS_NAME ('batch'). DataParallel wraps them:

* 'shard_map' (default): jax.jit(jax.shard_map(step, mesh=1-D mesh of all devices)). The state is
  a replicated global array (PartitionSpec()), batches are sharded on their batch axis.
* 'pmap': jax.pmap(step, axis_name=AXIS_NAME). The state carries a leading device axis (one copy
  per device), batches are reshaped host-side to (devices, ..., per-device batch, ...).

shard_map runs with check_vma=False so that both wrappers have pmap's semantics for autodiff:
the gradient a device computes is the gradient of its own (local) loss with respect to its copy of
the parameters, and the step averages it explicitly with lax.pmean. (With check_vma=True,
shard_map would differentiate replicated parameters through an implicit psum, and the same
per-device code would return gradients summed over devices.)

The state is donated to each step. Every output of a wrapped step must be identical on all devices
(the steps pmean what they return), so outputs are declared replicated.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS_NAME = "batch"
PARALLEL_KINDS = ("shard_map", "pmap")


class DataParallel:
    """Replicates state, shards batches and wraps per-device steps for one device set.

    Args:
      kind: 'shard_map' or 'pmap'.
      devices: the devices to run on (default: jax.devices(), every device of every host).
    """

    def __init__(self, kind: str = "shard_map", devices: Optional[Sequence[Any]] = None):
        if kind not in PARALLEL_KINDS:
            raise ValueError(f"config.parallel={kind!r} is not one of {PARALLEL_KINDS}")
        if kind == "pmap" and jax.process_count() > 1:
            raise ValueError("config.parallel='pmap' is supported on one host; multi-host runs "
                             "use config.parallel='shard_map'")
        self.kind = kind
        self.devices = list(jax.devices() if devices is None else devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS_NAME,))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._per_device = NamedSharding(self.mesh, PartitionSpec(AXIS_NAME))

    @property
    def num_devices(self) -> int:
        """Number of devices over all hosts."""
        return len(self.devices)

    @property
    def num_local_devices(self) -> int:
        """Number of this host's devices in the device set."""
        return sum(d.process_index == jax.process_index() for d in self.devices)

    # ----------------------------------------------------------------------------------- state
    def replicate(self, tree: Any) -> Any:
        """One copy of a pytree (host or device arrays) -> the wrapped steps' state layout."""
        if self.kind == "shard_map":
            return jax.device_put(tree, self._replicated)
        n = self.num_devices
        return jax.device_put(
            jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree),
            self._per_device)

    def unreplicate(self, tree: Any) -> Any:
        """The steps' state layout -> one copy: for shard_map the replicated global arrays
        themselves (multi-host aware; what checkpoints hold), for pmap the copy on this host's
        first device."""
        if self.kind == "shard_map":
            return tree
        return jax.tree_util.tree_map(lambda x: x.addressable_data(0)[0], tree)

    def local_copy(self, tree: Any) -> Any:
        """One copy on this host's first device (no transfer), for evaluation and host reads."""
        if self.kind == "shard_map":
            return jax.tree_util.tree_map(lambda x: x.addressable_data(0), tree)
        return self.unreplicate(tree)

    @property
    def state_sharding(self) -> Any:
        """Sharding of a checkpoint's arrays when restored (one copy, see unreplicate)."""
        if self.kind == "shard_map":
            return self._replicated
        return jax.sharding.SingleDeviceSharding(self._first_local_device)

    @property
    def _first_local_device(self) -> Any:
        return [d for d in self.devices if d.process_index == jax.process_index()][0]

    # ---------------------------------------------------------------------------------- batches
    def shard_batch(self, batch: np.ndarray, axis: int = 0) -> jax.Array:
        """This host's part of a global batch -> the device layout of the wrapped steps.

        Args:
          batch: host array whose axis `axis` holds this host's examples (global batch divided
            by the number of hosts); it must divide by the number of local devices.
          axis: the batch axis (0 for one batch, 1 for a stack of batches (steps, batch, ...)).
        Returns:
          for shard_map, a global array sharded over devices on `axis`; for pmap, a global array
          of shape (devices, *batch.shape with axis divided by devices) sharded on axis 0.
        """
        n_local = self.num_local_devices
        if batch.shape[axis] % n_local:
            raise ValueError(f"batch axis {axis} of size {batch.shape[axis]} does not divide by "
                             f"the {n_local} local devices")
        if self.kind == "shard_map":
            spec = PartitionSpec(*([None] * axis + [AXIS_NAME]))
            return jax.make_array_from_process_local_data(NamedSharding(self.mesh, spec), batch)
        shape = batch.shape
        split = batch.reshape(shape[:axis] + (n_local, shape[axis] // n_local) + shape[axis + 1:])
        per_device = np.moveaxis(split, axis, 0)
        return jax.make_array_from_process_local_data(self._per_device, per_device)

    # ------------------------------------------------------------------------------------ steps
    def wrap(self, step: Callable[..., Any], batch_axes: Sequence[int] = (),
             donate_state: bool = True) -> Callable[..., Any]:
        """Wraps a per-device step(state, *batches) -> outputs over all devices.

        Args:
          step: per-device function; collectives use AXIS_NAME; every output must be identical on
            all devices (pmean'd or computed from gathered values).
          batch_axes: for each batch argument after the state, its batch axis (see shard_batch).
          donate_state: donate the state's buffers (the caller must not reuse the input state).
        Returns:
          a function of (state, *sharded batches) returning the step's outputs in the state layout
          (replicated for shard_map, with a leading device axis for pmap).
        """
        donate = (0,) if donate_state else ()
        if self.kind == "pmap":
            return jax.pmap(step, axis_name=AXIS_NAME, devices=self.devices, donate_argnums=donate)
        in_specs = (PartitionSpec(),) + tuple(
            PartitionSpec(*([None] * a + [AXIS_NAME])) for a in batch_axes)
        mapped = jax.shard_map(step, mesh=self.mesh, in_specs=in_specs,
                               out_specs=PartitionSpec(), check_vma=False)
        return jax.jit(mapped, donate_argnums=donate)


def global_slice(global_array: jax.Array, local_size: int) -> jax.Array:
    """This device's rows of an array drawn for the whole global batch (inside a wrapped step).

    Random draws are made for the global batch from a key that does not depend on the device, and
    each device keeps its rows [i * local_size, (i + 1) * local_size), i = its index on the axis.
    Then the training trajectory does not depend on how many devices share the batch.
    """
    start = jax.lax.axis_index(AXIS_NAME) * local_size
    return jax.lax.dynamic_slice_in_dim(global_array, start, local_size, axis=0)


def axis_size() -> int:
    """Number of devices on the data axis (inside a wrapped step)."""
    return jax.lax.psum(1, AXIS_NAME)


def all_gather(x: jax.Array) -> jax.Array:
    """Concatenates every device's rows in device order (inside a wrapped step): (n,) -> (N,)."""
    return jax.lax.all_gather(x, AXIS_NAME, tiled=True)


def pmean(tree: Any) -> Any:
    """Mean over devices of every leaf (inside a wrapped step)."""
    return jax.lax.pmean(tree, AXIS_NAME)


def fingerprint(tree: Any) -> str:
    """A digest of a pytree's values: the first 16 hex digits of the sha256 of every leaf's
    dtype, shape and bytes, in tree order (host copy; blocks until the leaves are computed).

    Replicas of a state on the processes of a multi-host run must have equal fingerprints
    (run_loop logs it at the end of such a run).
    """
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(tree)):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()[:16]
