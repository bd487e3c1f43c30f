"""Exported runs: a run's config, tokenizer and EMA parameters, without checkpoints or history.

An exported directory holds ``config.json`` and ``tokenizer.json`` as a run directory does, the EMA
parameters of one checkpoint in ``params.msgpack`` (flax's msgpack serialization, stored in
``float32`` or ``bfloat16``) and ``export.json`` (where they came from, the step, the dtype and the
file's sha256). ``generate.load_run`` reads it wherever it reads a run, so every sampling and
evaluation command takes one as ``--workdir`` (``make demo MODEL=DIR``).
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
from flax import serialization

from diffusion_text import denoiser, runs, sharding
from diffusion_text.errors import CheckpointError, UserError

PARAMS_FILE = "params.msgpack"
INFO_FILE = "export.json"
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def is_exported(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, INFO_FILE))


def write(out: str, config, tokenizer, params, *, step: int, source: str,
          dtype: str = "float32") -> dict:
  """Writes the exported directory ``out`` (which must not exist) and returns its ``export.json``.
  The files are written into a temporary directory beside ``out`` that is renamed at the end, so
  ``out`` is either complete or absent."""
  if dtype not in DTYPES:
    raise UserError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  if os.path.exists(out):
    raise UserError(f"{out} exists; choose a new directory")
  host = jax.tree.map(lambda a: np.asarray(jax.device_get(a)).astype(DTYPES[dtype]), params)
  data = serialization.msgpack_serialize(host)
  info = {"source": source, "step": int(step), "dtype": dtype,
          "parameters": int(sum(a.size for a in jax.tree.leaves(host))),
          "sha256": hashlib.sha256(data).hexdigest()}
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    with open(os.path.join(tmp, PARAMS_FILE), "wb") as f:
      f.write(data)
    runs.write_config(tmp, config)
    runs.save_tokenizer(tmp, tokenizer)
    runs.write_atomic(os.path.join(tmp, INFO_FILE), json.dumps(info, indent=2) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's directory is private; the export is not
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info


def read_info(workdir: str) -> dict:
  path = os.path.join(workdir, INFO_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    int(info["step"]), DTYPES[info["dtype"]], str(info["sha256"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from e
  return info


def load_params(workdir: str, init_params, model_cfg, mesh, rules):
  """The exported parameters of ``workdir`` in ``model_cfg``'s dtype, laid out on ``mesh``, the
  blocks scanned or unrolled as ``model_cfg.scan_layers`` says whichever layout was exported.
  A file whose sha256 or tree does not match raises CheckpointError."""
  info = read_info(workdir)
  path = os.path.join(workdir, PARAMS_FILE)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
  if hashlib.sha256(data).hexdigest() != info["sha256"]:
    raise CheckpointError(f"{path} is corrupt: its sha256 differs from the one in {INFO_FILE}")
  stored = serialization.msgpack_restore(data)
  layout = denoiser.scan_layers_of(stored)
  stored_cfg = model_cfg if layout is None else dataclasses.replace(model_cfg, scan_layers=layout)
  abstract = nn.meta.unbox(jax.eval_shape(lambda r: init_params(stored_cfg, r),
                                          jax.random.PRNGKey(0)))
  want = {jax.tree_util.keystr(k): a for k, a in jax.tree_util.tree_leaves_with_path(abstract)}
  have = {jax.tree_util.keystr(k): a for k, a in jax.tree_util.tree_leaves_with_path(stored)}
  if set(want) != set(have) or any(want[k].shape != have[k].shape for k in want):
    diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k].shape != have[k].shape]
    raise CheckpointError(f"{path} does not hold this config's parameters (first difference: "
                          f"{diff[0]})")
  params = jax.tree.map(lambda a, s: np.asarray(s).astype(a.dtype), abstract, stored)
  if layout is not None and layout != model_cfg.scan_layers:
    params = denoiser.convert_layout(params, model_cfg.scan_layers, model_cfg.num_layers)
  boxed = jax.eval_shape(lambda r: init_params(model_cfg, r), jax.random.PRNGKey(0))
  return jax.device_put(params, sharding.logical_to_shardings(boxed, mesh, rules))
