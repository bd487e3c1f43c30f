"""Device mesh and shardings from the config.

The mesh has axes ``(data, fsdp, tensor)``; sizes come from ``config.mesh`` (one may be -1 = fill with
the remaining devices). Parameters carry logical axis names; ``config.axis_rules`` maps them to mesh
axes, so data parallel, FSDP and tensor parallel are config changes only. A single CPU device is a
1x1x1 mesh and runs the same jitted step.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from diffusion_text.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both data-parallel axes


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"mesh sizes must be positive with at most one -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                      f"{num_devices} available")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def axis_rules(config) -> tuple[tuple[str, object], ...]:
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in config.axis_rules)


def logical_to_shardings(boxed_tree, mesh, rules):
  """NamedShardings for a tree of (abstract) logically partitioned values."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(batch: dict, mesh) -> dict:
  """Place a host-local numpy batch on the mesh, split over the batch axes.

  Single-process: the host batch is the global batch. Multi-process: each host passes its slice and
  the global array is assembled from the per-process pieces.
  """
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return {k: jax.device_put(np.asarray(v), sharding) for k, v in batch.items()}
  from jax.experimental import multihost_utils
  return multihost_utils.host_local_array_to_global_array(batch, mesh, P(BATCH_AXES))
