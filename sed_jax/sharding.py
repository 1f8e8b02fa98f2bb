"""Device mesh and the host-local → global array boundary.

Parallelism is `jax.jit` with shardings over a 1-D mesh axis `data` that spans every device of
every process. Each process produces only its own slice of a global batch; this module turns those
slices into global `jax.Array`s. With that, the same training step runs on one CPU, on 8 simulated
CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on a GPU host and on a TPU pod
slice, and BatchNorm statistics are global without any explicit collective.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh named `data` over all devices (of all processes) unless given."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, everything else replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated: parameters, optimiser state, scalars."""
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh, key: str = "batch_size") -> int:
  """Returns the per-process batch size; raises if the global batch cannot be split evenly.

  The global batch is split across processes, then across each process's devices; both
  divisions must be exact or shapes would differ between devices.
  """
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch_size <= 0 or global_batch_size % n_dev:
    raise ValueError(
        f"Config key {key}={global_batch_size} must be a positive multiple of the device count "
        f"({n_dev}); set --config.{key} to a multiple of {n_dev}.")
  return global_batch_size // n_proc


def to_global(local_batch: Any, mesh: Mesh) -> Any:
  """Turns this process's slice of a batch (a pytree of numpy arrays) into global jax.Arrays.

  The global leading dimension is `local * process_count`; process `p` holds rows
  `[p * local, (p + 1) * local)`, in process order.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
