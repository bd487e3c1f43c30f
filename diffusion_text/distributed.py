"""Multi-process (multi-host) start-up through JAX's own runtime, ``jax.distributed``.

Every process runs the same program. Three ways to start:

* single process (default): nothing to do.
* ``auto``: ``jax.distributed.initialize()`` with no arguments; JAX detects the cluster (Cloud TPU
  pods, SLURM, Open MPI, ...) and its coordinator itself.
* explicit: a coordinator ``host:port`` (process 0's address), the number of processes and this
  process's id, for GPU clusters without a supported scheduler and for local multi-process tests.

After start-up ``jax.devices()`` lists the devices of all processes; the mesh spans them, each process
feeds its own rows of every global batch, and only process 0 logs and writes run files.
"""
from typing import Optional

import jax
from absl import logging

from diffusion_text.errors import ConfigError


def initialize(*, auto: bool = False, coordinator_address: str = "",
               num_processes: Optional[int] = None, process_id: Optional[int] = None) -> None:
  """Starts the multi-process runtime if asked to; then quiets logging on processes other than 0."""
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ConfigError("--coordinator_address needs --num_processes and --process_id")
    if not 0 <= process_id < num_processes:
      raise ConfigError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  elif num_processes not in (None, 1):
    raise ConfigError("--num_processes > 1 needs --coordinator_address (or --distributed=auto)")
  else:
    return
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  logging.info("process %d of %d: %d local devices, %d in all", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
