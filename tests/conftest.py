"""Test setup: 8 fake CPU devices (set before jax is imported) and the datasets the tests read.

On a GPU the default backend is the GPU: the resume tests compare bit for bit, so XLA:GPU is told to
use deterministic kernels (no atomics in reductions and scatters, deterministic autotuning); without
it a resumed run's parameters differed from an uninterrupted run's by up to 1e-6 on an H100 (not yet
rerun with it). CPU ignores it.

Data: every test, and every process a test starts, reads a synthetic E2E-format dataset that this
file writes to a temporary folder at start-up (``tests/e2e_fixture.py``; no corpus is copied into
the repository): ``DIFFUSION_TEXT_DATA_DIR`` is set to it here whatever the caller's environment
says, so ``make test`` needs no download and gives the same results on every machine. Tests that need the
full corpora are marked ``full_data`` and take the ``full_data_dir`` fixture: the dir that
``DIFFUSION_TEXT_DATA_DIR`` named when pytest started (``make test-data`` passes ``../shared/data``).
Without it they fail, never skip; ``make test`` deselects them.
"""
import atexit
import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_gpu_deterministic_ops=true").strip()

import pytest  # noqa: E402

import e2e_fixture  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE_DATA_DIR = pathlib.Path(tempfile.mkdtemp(prefix="diffusion_text_test_data_"))
atexit.register(shutil.rmtree, FIXTURE_DATA_DIR, True)
e2e_fixture.write(FIXTURE_DATA_DIR)
# The caller's data dir, read by `full_data` tests only ('' when none was named).
FULL_DATA_DIR = os.environ.get("DIFFUSION_TEXT_DATA_DIR", "")
DATA_DIR = FIXTURE_DATA_DIR
os.environ["DIFFUSION_TEXT_DATA_DIR"] = str(DATA_DIR)
E2E_DIR = DATA_DIR / "e2e" / "diffusion_lm_format"


@pytest.fixture(scope="session", autouse=True)
def tfds_dir(tmp_path_factory):
  """One prepared-TFDS dir per test session (E2E prepares in a few seconds), set before any test
  runs: TFDS keys prepared data by dataset name, not by the raw files, so data prepared elsewhere
  (~/.cache/diffusion_text/tfds, say from the full E2E) would otherwise stand in for the excerpt."""
  d = tmp_path_factory.mktemp("tfds")
  os.environ["DIFFUSION_TEXT_TFDS_DIR"] = str(d)
  return d


def require_synthetic_e2e():
  """Fails the test when the synthetic E2E-format fixture that conftest writes is missing."""
  if not (E2E_DIR / "src1_train.txt").exists():
    pytest.fail(f"the synthetic E2E fixture is missing from {E2E_DIR} (conftest writes it)")


@pytest.fixture(scope="session")
def full_data_dir():
  """The full corpora, for tests marked ``full_data`` (``make test-data``); fails when missing."""
  how = "`make test-data` sets DIFFUSION_TEXT_DATA_DIR to ../shared/data"
  if not FULL_DATA_DIR:
    pytest.fail(f"this test reads the full corpora, but DIFFUSION_TEXT_DATA_DIR is not set ({how})")
  d = pathlib.Path(FULL_DATA_DIR).resolve()
  if not d.is_dir():
    pytest.fail(f"this test reads the full corpora, but {d} is not a directory ({how})")
  if d == FIXTURE_DATA_DIR.resolve():
    pytest.fail(f"DIFFUSION_TEXT_DATA_DIR names the synthetic test fixture {d}, not the full corpora ({how})")
  return d


def require_files(root: pathlib.Path, *names: str) -> None:
  missing = [n for n in names if not (root / n).exists()]
  if missing:
    pytest.fail(f"full data incomplete: {', '.join(missing)} not found in {root}")


def pytest_collection_modifyitems(config, items):
  """A test that reads the full corpora must be marked ``full_data`` (so ``make test``, which runs
  without them, deselects it), and a ``full_data`` test must read them."""
  for item in items:
    uses = "full_data_dir" in getattr(item, "fixturenames", ())
    marked = item.get_closest_marker("full_data") is not None
    if uses != marked:
      raise pytest.UsageError(
          f"{item.nodeid}: " + ("uses full_data_dir but is not marked full_data" if uses else
                                "is marked full_data but does not use the full_data_dir fixture"))
