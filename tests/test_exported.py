"""Exported runs (``diffusion_text.exported``, ``experiments.export``)."""
import hashlib
import json
import os
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest

from configs import tiny
from conftest import ROOT, require_synthetic_e2e
from diffusion_text import evaluate, exported, generate, train
from diffusion_text.errors import CheckpointError, UserError

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def trained(tmp_path_factory, tfds_dir):
  """A tiny seq2seq run with checkpoints at steps 3 and 6."""
  require_synthetic_e2e()
  w = str(tmp_path_factory.mktemp("exp") / "run")
  c = tiny.get_config("seq2seq")
  with c.unlocked():
    c.eval.num_samples = 0
  train.train_and_evaluate(c, w)
  return w


def _flat(params):
  return [np.asarray(a) for a in jax.tree.leaves(params)]


def _export(run, out, dtype="float32"):
  return exported.write(out, run.config, run.tokenizer, run.params, step=run.step, source="t",
                        dtype=dtype)


def test_float32_export_loads_the_same_parameters_and_samples(trained, tmp_path):
  a = generate.load_run(trained, 3)
  info = _export(a, str(tmp_path / "f32"))
  b = generate.load_run(str(tmp_path / "f32"))
  assert info["step"] == b.step == 3 and info["parameters"] == sum(x.size for x in _flat(a.params))
  assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
  for x, y in zip(_flat(a.params), _flat(b.params)):
    assert x.dtype == y.dtype and np.array_equal(x, y)
  sources = ["name : Aromi | Type : pub", "name : Zizzi | food : French | area : riverside"]
  kw = dict(sources=sources, sampler="ddim", steps=5, seed=3)
  np.testing.assert_array_equal(a.generate_ids(**kw), b.generate_ids(**kw))
  assert generate.load_run(str(tmp_path / "f32"), 3).step == 3
  with pytest.raises(CheckpointError, match="export of step 3 alone, not 6"):
    generate.load_run(str(tmp_path / "f32"), 6)


def test_bfloat16_export_is_the_rounded_parameters_in_the_runs_dtype(trained, tmp_path):
  a = generate.load_run(trained)
  _export(a, str(tmp_path / "f32"))
  _export(a, str(tmp_path / "bf16"), dtype="bfloat16")
  size = lambda d: os.path.getsize(os.path.join(tmp_path, d, exported.PARAMS_FILE))
  assert size("bf16") < 0.6 * size("f32")
  b = generate.load_run(str(tmp_path / "bf16"))
  for x, y in zip(_flat(a.params), _flat(b.params)):
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x.astype(ml_dtypes.bfloat16).astype(np.float32), y)


def test_export_loads_in_the_other_block_layout(trained, tmp_path):
  a = generate.load_run(trained, scan_layers=True)
  _export(generate.load_run(trained), str(tmp_path / "e"))  # exported as trained (unrolled)
  b = generate.load_run(str(tmp_path / "e"), scan_layers=True)
  for x, y in zip(_flat(a.params), _flat(b.params)):
    np.testing.assert_array_equal(x, y)


def test_corrupt_or_foreign_exports_are_refused(trained, tmp_path):
  a = generate.load_run(trained)
  out = str(tmp_path / "e")
  _export(a, out)
  path = os.path.join(out, exported.PARAMS_FILE)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(CheckpointError, match="is corrupt"):
    generate.load_run(out)
  with pytest.raises(UserError, match="exists"):
    _export(a, out)
  # the parameters of another config, with a valid checksum
  other = tiny.get_config("seq2seq")
  with other.unlocked():
    other.model.width = 48
  exported.write(str(tmp_path / "o"), other, a.tokenizer, a.params, step=1, source="t")
  with pytest.raises(CheckpointError, match="does not hold this config's parameters"):
    generate.load_run(str(tmp_path / "o"))
  assert sorted(os.listdir(tmp_path)) == ["e", "o"]  # no temporary directory left behind
  before = sorted(os.listdir(out))
  for restart in (False, True):  # training into an export is refused, nothing written or moved
    with pytest.raises(CheckpointError, match="is an exported run"):
      train.train_and_evaluate(tiny.get_config("seq2seq"), out, restart=restart)
  assert sorted(os.listdir(out)) == before


def test_export_cli_writes_once_and_refuses_to_overwrite(trained, tmp_path):
  out = str(tmp_path / "cli")
  cmd = [sys.executable, "-m", "experiments.export", "--workdir", trained, "--out", out,
         "--dtype", "bfloat16"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 0, p.stderr[-2000:]
  info = json.load(open(os.path.join(out, exported.INFO_FILE)))
  assert info["step"] == 6 and info["dtype"] == "bfloat16"
  before = open(os.path.join(out, exported.PARAMS_FILE), "rb").read()
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert p.returncode != 0
  assert p.stderr.strip().splitlines()[-1].startswith("error: --out") and "exists" in p.stderr
  assert open(os.path.join(out, exported.PARAMS_FILE), "rb").read() == before


def test_evaluating_an_export_on_inputs_reads_no_other_data(trained, tmp_path, monkeypatch):
  """``make demo``: an export evaluated on a file of inputs (the E2E test MRs beside
  the package) reads no data but that file, from an empty directory with no data dir."""
  out = str(tmp_path / "e")
  _export(generate.load_run(trained), out)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("DIFFUSION_TEXT_DATA_DIR", str(tmp_path / "none"))
  result, outputs = evaluate.evaluate_run(
      generate.load_run(out), split="inputs", num_inputs=4, sampler="ddim", steps=3,
      inputs=os.path.join(ROOT, "diffusion_text", "pretrained", "e2e_test100.jsonl"))
  assert result["num_inputs"] == len(outputs) == 4 and result["human_inputs"] == 4


BUNDLED = os.path.join(ROOT, "diffusion_text", "pretrained", "e2e_recipe")


def test_the_bundled_model_writes_e2e_texts_from_an_empty_directory(tmp_path, monkeypatch):
  """``make demo``: the model shipped in the package (at most 5 MiB, its sha256 as exported)
  writes E2E texts for the bundled test MRs with no data dir; on the first 8 MRs its BLEU against
  their references is that of a working model (58.5 on all 100; the MRs returned unchanged: 10)."""
  size = sum(os.path.getsize(os.path.join(BUNDLED, f)) for f in os.listdir(BUNDLED))
  assert size <= 5 * 2**20, size
  info = exported.read_info(BUNDLED)
  digest = hashlib.sha256(open(os.path.join(BUNDLED, exported.PARAMS_FILE), "rb").read())
  assert info["sha256"] == digest.hexdigest() and info["dtype"] == "bfloat16"
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("DIFFUSION_TEXT_DATA_DIR", str(tmp_path / "none"))
  result, outputs = evaluate.evaluate_run(
      generate.load_run(BUNDLED), split="inputs", num_inputs=8, sampler="dpm++2m", steps=20,
      inputs=os.path.join(ROOT, "diffusion_text", "pretrained", "e2e_test100.jsonl"))
  assert len(outputs) == 8 and result["bleu"] > 45, (result["bleu"], outputs[0]["hyp"])
  assert all(o["hyp"].endswith(".") for o in outputs), [o["hyp"] for o in outputs]
