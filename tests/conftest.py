"""Test setup: 8 fake CPU devices (set before jax is imported) and the shared datasets dir.

On a GPU the default backend is the GPU: the resume tests compare bit for bit, so XLA:GPU is told to
use deterministic kernels (no atomics in reductions and scatters, deterministic autotuning); without
it a resumed run's parameters differed from an uninterrupted run's by up to 1e-6 on an H100 (not yet
rerun with it). CPU ignores it.
"""
import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_gpu_deterministic_ops=true").strip()

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
DATA_DIR = pathlib.Path(os.environ.get("DIFFUSION_TEXT_DATA_DIR") or _SHARED)
os.environ["DIFFUSION_TEXT_DATA_DIR"] = str(DATA_DIR)
E2E_DIR = DATA_DIR / "e2e" / "diffusion_lm_format"


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One prepared-TFDS dir per test session (E2E prepares in a few seconds)."""
  d = tmp_path_factory.mktemp("tfds")
  os.environ["DIFFUSION_TEXT_TFDS_DIR"] = str(d)
  return d


def require_e2e():
  if not (E2E_DIR / "src1_train.txt").exists():
    pytest.fail(f"E2E data not found in {E2E_DIR}; set DIFFUSION_TEXT_DATA_DIR")
