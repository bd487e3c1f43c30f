"""Full-state orbax checkpoints: TrainState (params, EMA, optimizer, step, RNG) + data iterator position.

Saves are asynchronous and keep the ``keep`` newest. Restores go onto an abstract target that carries
the current mesh's shardings, so a checkpoint written on one mesh restores onto another.
"""
import logging
import os
import re
import time

import orbax.checkpoint as ocp

from diffusion_text.errors import CheckpointError

QUARANTINE_DIR = "unreadable_checkpoints"  # beside checkpoints/, in the run directory


class Checkpointer:
  def __init__(self, directory: str, *, keep: int = 3, save_every_steps: int = 1,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every_steps,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))
    self._last_saved = None

  def _write_error(self, step, e: Exception) -> CheckpointError:
    text = str(e).strip()
    code = re.search(r"os_error_code=\W?(\d+)", text)  # tensorstore's message ends in the cause
    if code:
      reason = f"{os.strerror(int(code.group(1)))} (errno {code.group(1)}, from {type(e).__name__})"
    else:
      reason = f"{type(e).__name__}: {text.splitlines()[0][:400] if text else ''}"
    return CheckpointError(f"cannot write checkpoint {step} to {self.directory}: {reason}")

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Starts an (async) save. Raises CheckpointError if this or an earlier save failed (disk full,
    unwritable directory): training must not go on without checkpoints."""
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)
    except Exception as e:  # orbax/tensorstore raise ValueError, OSError, ... for write failures
      raise self._write_error(self._last_saved if self._last_saved is not None else step, e) from e
    if saved:
      self._last_saved = step
    return saved

  def check(self) -> None:
    """Raises CheckpointError if an async save that has finished failed (call it often)."""
    try:
      self.manager.check_for_errors()
    except Exception as e:
      raise self._write_error(self._last_saved, e) from e

  def restore(self, step: int, abstract_state):
    """(state, data_state) of checkpoint ``step``, laid out like ``abstract_state``."""
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for missing/corrupt/mismatched files
      raise CheckpointError(
          f"cannot restore checkpoint {step} from {self.directory}: {type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return out.state, out.data

  def restore_part(self, step: int, abstract_part: dict) -> dict:
    """The parts of checkpoint ``step``'s state named by ``abstract_part`` (e.g. ``{"ema_params":
    ...}``), laid out like it; nothing else is read."""
    import jax
    restore_args = jax.tree.map(
        lambda a: ocp.ArrayRestoreArgs(global_shape=a.shape, dtype=a.dtype, sharding=a.sharding),
        abstract_part)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          abstract_part, restore_args=restore_args, partial_restore=True)))
    except Exception as e:  # orbax raises many types for missing/corrupt/mismatched files
      raise CheckpointError(
          f"cannot restore checkpoint {step} from {self.directory}: {type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return out.state

  def stored_tree(self, step: int):
    """The tree of checkpoint ``step``'s state as stored (nested dicts of array metadata, from orbax's
    metadata; no arrays are read), or None when it cannot be read: the restore then names the
    problem."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax warns that the item has no step-level metadata
    try:
      with ocp.StandardCheckpointer() as reader:
        meta = reader.metadata(os.path.join(self.directory, str(step), "state"))
      tree = getattr(getattr(meta, "item_metadata", meta), "tree", None)
      return tree if isinstance(tree, dict) else None
    except Exception:  # noqa: BLE001 (any unreadable metadata: let the restore name the problem)
      return None
    finally:
      absl_logger.setLevel(level)

  def quarantine(self, step: int) -> str:
    """Moves an unreadable checkpoint out of the way (never deletes it); returns its new path."""
    src = os.path.join(self.directory, str(step))
    dst_dir = os.path.join(os.path.dirname(self.directory), QUARANTINE_DIR)
    os.makedirs(dst_dir, exist_ok=True)
    dst = os.path.join(dst_dir, f"{step}.{int(time.time())}")
    os.replace(src, dst)
    self.manager.reload()
    return dst

  def wait(self):
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()
    except Exception as e:
      raise self._write_error(self._last_saved, e) from e

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()
    logging.debug("checkpointer closed")
