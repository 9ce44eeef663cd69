"""Data parallelism with `jax.jit` over a device mesh (what pjit became).

One mesh axis, "data": the batch is split over it and the train state is replicated.
The same code runs on one CPU, N simulated CPU devices, a GPU or a TPU pod; with several
processes, each contributes its local batch and `make_array_from_process_local_data`
assembles the global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mobilenet_jax.errors import ConfigError

DATA_AXIS = "data"


def create_mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (the train state)."""
  return NamedSharding(mesh, PartitionSpec())


def replicated_everywhere() -> NamedSharding:
  """Whole arrays on every device present: how tools place restored weights."""
  return replicated(create_mesh())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(name: str, global_batch_size: int) -> None:
  """The global batch must split evenly over processes and devices."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise ConfigError(
        f"{name}={global_batch_size} must be a multiple of the device count "
        f"({devices}: {jax.process_count()} process(es) x {jax.local_device_count()}).")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's share of a batch into global, batch-sharded arrays."""
  sharding = batch_sharded(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in local_batch.items()}
