"""The run directory: its config file, and guards (one writer at a time, a history that is never
overwritten).

``CONFIG_FILE`` holds the resolved config; ``load_config`` reads it, filling the keys added since it
was written (``ADDED_KEYS``) with the values that reproduce what older code did;
``config_differences`` is what resuming compares (``RESUMABLE_KEYS`` may change).

``WorkdirLock`` is an advisory ``flock`` on ``WORKDIR/run.lock``, a file naming its holder (pid,
host, start time). The kernel drops the lock when the holder dies, so a lock file left behind by a
killed process is taken over with a warning; a live holder makes a second writer fail with one line
naming it. ``move_aside`` implements ``--restart``: the run's files go into
``WORKDIR/previous-<UTC time>/``, never deleted.

``MetricsLog`` appends the training's scalars to ``metrics.jsonl`` (the record) and TensorBoard
event files; ``read_metrics_lines`` reads the record back, tolerating a torn last line.
"""
import fcntl
import json
import logging
import os
import socket
import time

import ml_collections
import numpy as np

from diffusion_text.data import tokenizers
from diffusion_text import defaults
from diffusion_text.errors import CheckpointError, ConfigError, UserError

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LOCK_FILE = "run.lock"
PREVIOUS_PREFIX = "previous-"
METRICS_FILE = "metrics.jsonl"
REWOUND_FILE = "metrics.rewound.jsonl"  # lines of steps a resumed run redid
TENSORBOARD_DIR = "tensorboard"  # the same scalars as TensorBoard event files (tensorboardX)


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes ``path`` (text as UTF-8, or bytes) through a temporary file in the same folder and a
  rename, so a reader (or a process killed mid-write) never leaves or sees a half-written file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data.encode("utf-8") if isinstance(data, str) else data)
  os.replace(tmp, path)


def save_tokenizer(workdir: str, tok: tokenizers.Tokenizer) -> None:
  write_atomic(os.path.join(workdir, TOKENIZER_FILE), json.dumps(tok.to_json(), ensure_ascii=False))


def load_tokenizer(workdir: str) -> tokenizers.Tokenizer:
  """The tokenizer saved in run directory ``workdir`` (DataError if missing or corrupt)."""
  return tokenizers.load_tokenizer(os.path.join(workdir, TOKENIZER_FILE))


class WorkdirBusyError(UserError):
  """Another live process holds the run directory."""


def _holder_text(raw: bytes) -> str:
  try:
    h = json.loads(raw.decode())
    return f"pid {h['pid']} on {h['host']} (since {h['started']})"
  except (ValueError, KeyError, TypeError):
    return raw.decode(errors="replace").strip() or "an unknown process"


class WorkdirLock:
  """Context manager: ``with WorkdirLock(workdir): ...`` holds the run directory for one writer."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder_text(os.pread(fd, 4096, 0))
      os.close(fd)
      raise WorkdirBusyError(f"{os.path.dirname(self.path)} is in use by {holder}: one process "
                             f"writes a run directory at a time (lock {self.path})") from None
    previous = os.pread(fd, 4096, 0)
    if previous.strip():  # released without being emptied: its holder died
      logging.warning("taking over %s, left by %s, which is no longer running", self.path,
                      _holder_text(previous))
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    os.ftruncate(fd, 0)
    os.pwrite(fd, me.encode() + b"\n", 0)
    self._fd = fd
    return self

  def release(self) -> None:
    """Empties the file (no holder) and unlocks; the file stays, so a waiting opener never locks an
    unlinked inode while a third process creates a new one."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing the last descriptor drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def move_aside(workdir: str) -> str:
  """Moves everything in ``workdir`` except the lock and earlier ``previous-*`` folders into a new
  ``previous-<UTC time>`` folder; returns its path."""
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  dest = os.path.join(workdir, PREVIOUS_PREFIX + stamp)
  n = 0
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(workdir, f"{PREVIOUS_PREFIX}{stamp}-{n}")
  names = [x for x in sorted(os.listdir(workdir))
           if x != LOCK_FILE and not x.startswith(PREVIOUS_PREFIX)]
  os.makedirs(dest)
  for name in names:
    os.replace(os.path.join(workdir, name), os.path.join(dest, name))
  return dest


# Keys that may differ between the saved and the requested config when resuming.
RESUMABLE_KEYS = ("train.num_train_steps", "train.log_every_steps", "train.eval_every_steps",
                  "train.checkpoint_every_steps", "train.keep_checkpoints", "data.source_dir",
                  "data.encode_cache", "data.tfds_dir", "data.max_eval_examples", "eval.", "sample.",
                  "mesh.", "model.scan_layers")


# Keys added after runs were first written, with the value that reproduces what older code did.
ADDED_KEYS = {
    "model": {"family": "diffusion", "arch": "single_stack", "positions": "separate",
              "self_cond": False, "rope": False,
              "x0_head": "linear", "logits_head": "tied", "emb_norm": "none", "emb_scale": 1.0},
    "diffusion": {"self_cond_prob": 0.5, "absorb_prob": 0.0, "t_power": 1.0, "ce_weight": 0.0,
                  "cond_drop_prob": 0.0, "pad_weight": 1.0, "t_sampler": "uniform",
                  "reveal_prob": 0.0},
    "data": {"task": "lm", "max_src_len": 0, "strict": True, "encode_cache": 250_000,
             "target_start": "after_source", "delex": "", "delex_keep": "",
             "pack_blocks": False, "cut_sources": False},
    "sample": {"beam_alpha": 0.0, "collapse_repeats": False, "commit": False, "score_temp": 1.0,
               "logit_temp": 1.0, "grid_power": 1.0, "rounding": "model", "grid": [],
               "slot_guidance": 0.0, "cfg_scale": 1.0},
    "step_distill": {"teacher_run": "", "steps": 0},
    "eval": {"lm_teacher": "", "nll_t": 0},
    "train": {"skip_nonfinite_steps": False},
    "classifier": {"base_run": "", "labels": "words", "num_classes": 0, "max_t": -1},
}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} is not a training run: {CONFIG_FILE} not found")
  try:
    with open(path) as f:
      saved = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is corrupt: {e}") from e
  if not isinstance(saved, dict):
    raise ConfigError(f"{path}: not a config (a JSON object of sections)")
  for section, keys in ADDED_KEYS.items():
    for k, v in keys.items():
      saved.setdefault(section, {}).setdefault(k, v)
  config = ml_collections.ConfigDict(saved)
  try:
    check_types(config, defaults.get_config(), allow_unknown=True)
  except ConfigError as e:  # a hand-edited or damaged file
    raise ConfigError(f"{path}: {e}") from e
  return config


def check_types(config, base, allow_unknown: bool = False) -> None:
  """Raises ConfigError naming keys of ``base`` that ``config`` lacks, keys it has that ``base``
  does not (unless ``allow_unknown``: a saved run may hold keys since retired), and values of the
  wrong type (an int is a valid float)."""
  got, want = flatten_config(config), flatten_config(base)
  unknown = sorted(set(got) - set(want))
  if unknown and not allow_unknown:
    raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
  missing = sorted(set(want) - set(got))
  if missing:
    raise ConfigError(f"missing config key(s): {', '.join(missing)}")
  for k, v in want.items():
    if v is not None and not isinstance(got[k], type(v)) and not (
        isinstance(v, float) and isinstance(got[k], int)):
      raise ConfigError(f"config key {k} must be {type(v).__name__}, got {got[k]!r}")


def flatten_config(d, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v.tolist() if isinstance(v, np.ndarray) else v
  return out


def config_differences(saved: dict, requested: dict, include_resumable: bool = False) -> list[str]:
  """Keys whose values differ (JSON-normalised), ignoring those a resume may change unless
  ``include_resumable``."""
  a = flatten_config(json.loads(json.dumps(saved)))
  b = flatten_config(json.loads(json.dumps(requested)))
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k) != b.get(k) and (include_resumable or not any(
      k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS))]


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved ``config`` to ``WORKDIR/CONFIG_FILE`` (atomically)."""
  write_atomic(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))


# ------------------------------------------------------------------------------------- metrics

class MetricsLog:
  """Appends JSON lines, each with one ``write`` call on an O_APPEND descriptor (a line lands whole
  or, if the process dies inside the call, as a torn last line); on resume, moves lines from steps
  after the restored checkpoint to ``REWOUND_FILE`` and drops a torn last line with a warning.

  The numeric values also go to TensorBoard event files in ``TENSORBOARD_DIR`` (tensorboardX: no
  TensorFlow needed to write them), with a purge step on resume so TensorBoard drops the events of
  steps the run redoes. ``metrics.jsonl`` stays the record; events may lag by ``flush_secs``."""

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    if enabled and os.path.exists(self.path):
      lines = read_metrics_lines(self.path)
      keep = [l for l in lines if json.loads(l).get("step", 0) <= resume_step]
      if len(keep) < len(lines):  # steps the resumed run redoes: kept aside, never deleted
        dropped = os.path.join(workdir, REWOUND_FILE)
        with open(dropped, "a") as f:
          f.write("".join(l for l in lines if json.loads(l).get("step", 0) > resume_step))
        logging.warning("%s: %d lines after step %d, which the run redoes, moved to %s",
                        self.path, len(lines) - len(keep), resume_step, dropped)
      write_atomic(self.path, "".join(keep))
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=resume_step + 1,
                               flush_secs=10)

  def write(self, step: int, **values) -> None:
    if not self.enabled:
      return
    line = json.dumps({"step": int(step), "time": round(time.time(), 3), **values}) + "\n"
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line.encode())
    finally:
      os.close(fd)
    for k, v in values.items():
      if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics_lines(path: str) -> list[str]:
  """The JSON lines of a metrics file. A last line that does not parse (the process was killed
  while writing it) is dropped with a warning; a bad line before it is a CheckpointError naming it."""
  with open(path) as f:
    lines = [l if l.endswith("\n") else l + "\n" for l in f if l.strip()]
  good = []
  for n, line in enumerate(lines, 1):
    try:
      json.loads(line)
    except json.JSONDecodeError as e:
      if n == len(lines):
        logging.warning("%s: dropping a torn last line (%d): %s", path, n, line[:80].strip())
        break
      raise CheckpointError(f"{path}:{n}: not a JSON line ({e})") from e
    good.append(line)
  return good


def history_step(workdir: str) -> int:
  """The last step ``metrics.jsonl`` records (0 if none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return 0
  return max((json.loads(l).get("step", 0) for l in read_metrics_lines(path)), default=0)
