"""Device mesh and shardings from the config.

The mesh has axes ``(data, fsdp, tensor)``; sizes come from ``config.mesh`` (one may be -1 = fill with
the remaining devices). Parameters carry logical axis names; ``config.axis_rules`` maps them to mesh
axes, so data parallel, FSDP and tensor parallel are config changes only. A single CPU device is a
1x1x1 mesh and runs the same jitted step.
"""
import contextlib
import math
import threading

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


_active_rules = threading.local()


@contextlib.contextmanager
def mesh_context(mesh, rules):
  """Trace and run jitted steps under this: the mesh for sharding constraints and the logical axis
  rules that map the model's activation names (``act_batch`` ...) onto it (see ``constrain``).

  The rules are kept here rather than in ``flax.linen.logical_axis_rules``: under Flax's context,
  ``DenseGeneral`` re-applies its kernel's logical names to the kernel reshaped to 2-D and fails.
  """
  previous = getattr(_active_rules, "rules", None)
  _active_rules.rules = rules
  try:
    with jax.set_mesh(mesh):
      yield
  finally:
    _active_rules.rules = previous


def constrain(x, logical_axes: tuple):
  """``with_sharding_constraint`` by logical names; a no-op outside ``mesh_context``."""
  rules = getattr(_active_rules, "rules", None)
  if rules is None:
    return x
  spec = nn.logical_to_mesh_axes(logical_axes, rules)
  return jax.lax.with_sharding_constraint(x, spec)


def logical_to_shardings(boxed_tree, mesh, rules):
  """NamedShardings for a tree of (abstract) logically partitioned values."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(mesh, name: str, rows: int) -> None:
  """A batch of ``rows`` must split evenly over the mesh's batch axes (``name`` = its config key)."""
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if rows % shards:
    raise ConfigError(f"{name}={rows} does not divide over the mesh's {shards} data-parallel "
                      f"shards (mesh {dict(mesh.shape)}); use a multiple of {shards}")


def process_rows(mesh, global_rows: int) -> slice:
  """The rows of a global batch that live on this process's devices, as one contiguous slice.

  The input pipeline of each host loads only these rows (``data.pipeline.batched_dataset(rows=)``).
  """
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_rows,))
  spans = {(idx[0].start or 0, global_rows if idx[0].stop is None else idx[0].stop)
           for idx in index_map.values()}
  lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
  if sum(b - a for a, b in spans) != hi - lo:
    raise ConfigError(f"process {jax.process_index()} holds non-contiguous batch rows {sorted(spans)}"
                      "; order the mesh devices by process")
  return slice(lo, hi)


def global_batch(batch: dict, mesh, global_rows: int | None = None) -> dict:
  """Global arrays, split over the batch axes, from this process's rows of a batch.

  ``batch`` holds the rows ``process_rows(mesh, global_rows)`` (all rows in a single process; then
  ``global_rows`` may be omitted). Every process calls this with its own rows.
  """
  sharding = batch_sharding(mesh)
  if global_rows is None:
    global_rows = len(next(iter(batch.values())))
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(sharding, v, (global_rows,) + v.shape[1:])
  return out


def to_host(tree):
  """Numpy copies of a tree of global arrays, on every process (host values pass through).

  A replicated array is read from a local device; one sharded across processes is all-gathered
  (a collective: every process must call this).
  """
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return jax.device_get(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def any_process(flag: bool) -> bool:
  """True on every process if ``flag`` is True on any (agreement before a collective decision)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))
