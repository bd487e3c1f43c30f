"""Multi-process training on one machine: two processes of 4 CPU devices each (``make test-multihost``).

The processes run the real CLI with an explicit coordinator on a free loopback port. Their result must
equal one process with 8 devices and the same global batch, including across a stop and resume.
"""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, require_synthetic_e2e
from diffusion_text import generate

pytestmark = pytest.mark.multihost
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = str(ROOT)
  return env


def _train(workdir, *extra, processes: int = 1):
  """Runs experiments.train in ``processes`` processes (8 devices in all); returns their logs."""
  base = [sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py",
          "--workdir", str(workdir), *extra]
  if processes == 1:
    procs = [subprocess.Popen(base, cwd=ROOT, env=_env(8), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
  else:
    port = _free_port()
    procs = [subprocess.Popen(base + [f"--coordinator_address=127.0.0.1:{port}",
                                      f"--num_processes={processes}", f"--process_id={i}"],
                              cwd=ROOT, env=_env(8 // processes), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  logs = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=TIMEOUT_S)
      logs.append(out)
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _losses(workdir):
  import json
  rows = [json.loads(l) for l in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module")
def single(tmp_path_factory, tfds_dir):
  require_synthetic_e2e()
  w = tmp_path_factory.mktemp("single") / "run"
  _train(w)
  return w


def test_two_processes_with_resume_equal_one_process(single, tmp_path):
  w = tmp_path / "run"
  logs = _train(w, "--stop_at_step=3", processes=2)
  assert "stop_at_step reached" in logs[0]
  assert "step 2/6" not in logs[1]  # progress is logged by process 0 only
  logs = _train(w, processes=2)
  assert "resumed" in logs[0]
  a, b = generate.load_run(str(single)), generate.load_run(str(w))
  assert a.step == b.step == 6
  la, lb = _losses(single), _losses(w)
  assert sorted(la) == sorted(lb) == [2, 3, 4, 6]
  np.testing.assert_allclose([la[k] for k in sorted(la)], [lb[k] for k in sorted(lb)], rtol=1e-5)
  # Adam divides each gradient element by sqrt(v): an exactly-zero gradient (the attention key bias
  # has one) turns float32 reduction-order noise (gloo across processes vs one process) into updates
  # of up to ~lr. The tolerance is a fraction of the tiny config's lr (1e-3); test_sharding.py checks
  # the layouts themselves to float32 precision with SGD.
  diffs = [float(np.max(np.abs(x - y)))
           for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))]
  assert max(diffs) < 2e-4, diffs


def test_bad_process_flags_are_one_line_errors(tmp_path):
  r = subprocess.run([sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py",
                      "--workdir", str(tmp_path / "w"), "--num_processes=2"], cwd=ROOT, env=_env(1),
                     capture_output=True, text=True, timeout=TIMEOUT_S)
  assert r.returncode == 1 and "needs --coordinator_address" in r.stderr.strip().splitlines()[-1]
