"""Guards on a run directory: one writer at a time, and a history that is never overwritten.

``WorkdirLock`` is an advisory ``flock`` on ``WORKDIR/run.lock``, a file naming its holder (pid,
host, start time). The kernel drops the lock when the holder dies, so a lock file left behind by a
killed process is taken over with a warning; a live holder makes a second writer fail with one line
naming it. ``move_aside`` implements ``--restart``: the run's files go into
``WORKDIR/previous-<UTC time>/``, never deleted.
"""
import fcntl
import json
import logging
import os
import socket
import time

from diffusion_text.errors import UserError

LOCK_FILE = "run.lock"
PREVIOUS_PREFIX = "previous-"


def write_atomic(path: str, text: str) -> None:
  """Writes ``path`` through a temporary file in the same folder and a rename, so a reader (or a
  process killed mid-write) never leaves or sees a half-written file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


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
