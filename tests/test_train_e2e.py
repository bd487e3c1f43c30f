"""End to end on a small slice of E2E: train, checkpoint, stop/resume equality, sample, bad input."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from conftest import ROOT, require_synthetic_e2e
from diffusion_text import (checkpointing, embeddings, evaluators, generate, heldout, metrics,
                            recovery, train)
from diffusion_text.runs import load_config, load_tokenizer
from diffusion_text import runs as run_files
from diffusion_text.data import pipeline
from diffusion_text.errors import CheckpointError, DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tfds_dir):
  """One uninterrupted run and one stopped at step 3 and resumed (in-process)."""
  require_synthetic_e2e()
  root = tmp_path_factory.mktemp("runs")
  full, resumed = str(root / "full"), str(root / "resumed")
  train.train_and_evaluate(tiny.get_config(), full)
  train.train_and_evaluate(tiny.get_config(), resumed, stop_at_step=3)
  assert generate.load_run(resumed).step == 3
  train.train_and_evaluate(tiny.get_config(), resumed)
  return full, resumed


def _restore_state(workdir):
  from diffusion_text import checkpointing, families, optim, sharding
  from diffusion_text import train_state as ts
  cfg = load_config(workdir)
  tok = load_tokenizer(workdir)
  mesh = sharding.make_mesh(cfg.mesh)
  tx = optim.make_optimizer(cfg.optim, cfg.train.num_train_steps)
  abstract, _ = ts.state_shardings(families.family_of(cfg).init_params,
                                   families.model_config(cfg, tok.vocab_size), tx, mesh,
                                   sharding.axis_rules(cfg), ts.t_stats_of(cfg))
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    return ck.restore(ck.latest_step(), abstract)
  finally:
    ck.close()


def test_resume_is_bit_identical(runs):
  full, resumed = runs
  (a, da), (b, db) = _restore_state(full), _restore_state(resumed)
  assert int(a.step) == int(b.step) == 6 and da == db == {"next_batch": 6}
  # the checkpoint layout every run had before the loss-aware sampler: runs written then restore
  ck = checkpointing.Checkpointer(os.path.join(full, "checkpoints"), async_save=False)
  try:
    assert set(ck.stored_tree(6)) == {"step", "params", "ema_params", "opt_state", "rng"}
  finally:
    ck.close()
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  read = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  train_lines = lambda w: [{k: v for k, v in d.items() if k == "step" or k.startswith("train/")}
                           for d in read(w) if "train/loss" in d]
  assert train_lines(full) == train_lines(resumed)


@pytest.mark.parametrize("sampler", ["loss_aware", "warped"])
def test_adaptive_t_sampler_resumes_bit_identical(tmp_path, tfds_dir, sampler):
  """``diffusion.t_sampler=loss_aware|warped``: the per-t loss history is part of the checkpointed
  state, so a run stopped after the sampler left its uniform warm-up and resumed draws the same t
  and ends bit-identical to an uninterrupted one; by then the draw is no longer uniform."""
  require_synthetic_e2e()

  def config():
    c = tiny.get_config()
    c.unlock()
    c.diffusion.update(t_sampler=sampler, num_steps=8)  # 8 t x 10 losses: 80 draws
    c.eval.update(sample_steps=5, nll_t=2)
    c.sample.steps = 5
    c.train.update(num_train_steps=30, checkpoint_every_steps=12, eval_every_steps=30)
    return c

  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train.train_and_evaluate(config(), full)
  train.train_and_evaluate(config(), resumed, stop_at_step=24)
  train.train_and_evaluate(config(), resumed)
  (a, _), (b, _) = _restore_state(full), _restore_state(resumed)
  assert a.t_stats is not None and int(np.asarray(a.t_stats["count"]).sum()) == 30 * 8
  assert np.asarray(a.t_stats["count"]).min() >= 10
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(l) for l in open(os.path.join(full, "metrics.jsonl"))]
  share = [d["train/t_p_q3"] for d in lines if "train/t_p_q3" in d]
  assert share[0] == pytest.approx(0.25) and share[-1] != pytest.approx(0.25)
  if sampler == "loss_aware":
    assert share[-1] > 0.25  # noisier t, larger loss


def test_load_run_restores_exactly_the_checkpoints_ema_parameters(runs):
  """Sampling reads the EMA parameters alone (no optimizer state): they are the full state's."""
  full = runs[0]
  state, _ = _restore_state(full)
  run = generate.load_run(full)
  assert jax.tree.structure(run.params) == jax.tree.structure(state.ema_params)
  for x, y in zip(jax.tree.leaves(run.params), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_in_the_other_block_layout(tmp_path, tfds_dir):
  """A run checkpointed with scanned blocks resumes unrolled (``model.scan_layers`` is resumable):
  the restored state (parameters, EMA, Adam moments) is the scanned one converted exactly, and
  training goes on from it. (The two layouts draw dropout masks differently, so the continued
  trajectory is not the uninterrupted one's.)"""
  from diffusion_text import checkpointing, denoiser, families, optim, sharding
  from diffusion_text import train_state as ts
  require_synthetic_e2e()
  w = str(tmp_path / "relayout")
  train.train_and_evaluate(tiny.get_config(), w, stop_at_step=3)
  c = tiny.get_config()
  c.unlock()
  c.model.scan_layers = False
  tok = load_tokenizer(w)
  mesh, rules = sharding.make_mesh(c.mesh), sharding.axis_rules(c)
  tx = optim.make_optimizer(c.optim, c.train.num_train_steps)
  ck = checkpointing.Checkpointer(os.path.join(w, "checkpoints"), async_save=False)
  try:
    assert denoiser.scan_layers_of(ck.stored_tree(3)["params"]) is True
    states = {scan: ts.restore_in_layout(
        ck, 3, families.family_of(c).init_params,
        dataclasses.replace(families.model_config(c, tok.vocab_size), scan_layers=scan), tx, mesh,
        rules)[0] for scan in (True, False)}
  finally:
    ck.close()
  # every part of the state (EMA, Adam moments too) is in the requested layout, and the restored
  # unrolled model computes what the scanned one does
  assert denoiser.scan_layers_of(states[False].opt_state) is False
  assert denoiser.scan_layers_of(states[False].ema_params) is False
  z = jax.random.normal(jax.random.PRNGKey(0), (2, c.data.max_len, c.model.emb_dim))
  out = {scan: families.family_of(c).build(dataclasses.replace(
      families.model_config(c, tok.vocab_size), scan_layers=scan)).apply(
          {"params": states[scan].ema_params}, z, np.array([1, 50], np.int32))
         for scan in (True, False)}
  np.testing.assert_allclose(np.asarray(out[False]), np.asarray(out[True]), rtol=1e-5, atol=1e-5)
  train.train_and_evaluate(c, w)
  assert load_config(w).model.scan_layers is False
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any("model.scan_layers" in d.get("config_changed", []) for d in lines)
  assert all(np.isfinite(d["train/loss"]) for d in lines if "train/loss" in d)
  run = generate.load_run(w)
  assert run.step == 6 and "block_0" in str(jax.tree.structure(run.params))


def test_training_reduces_loss(runs):
  lines = [json.loads(l) for l in open(os.path.join(runs[0], "metrics.jsonl"))]
  losses = [d["train/loss"] for d in lines if "train/loss" in d]
  assert losses[-1] < losses[0]
  assert any("samples" in d for d in lines)
  # periodic held-out bits/token (eval.nll_t = 4 in the tiny config): the ELBO of the EMA model
  bits = [d["eval/nll_bits_per_token"] for d in lines if "eval/nll_bits_per_token" in d]
  assert bits and all(np.isfinite(b) and b > 0 for b in bits)


def test_generate_api(runs):
  run = generate.load_run(runs[0])
  texts = run.generate(3, sampler="ddim", steps=5, seed=1)
  assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
  assert texts == run.generate(3, sampler="ddim", steps=5, seed=1)
  ids = run.generate_ids(2, sampler="ddpm", steps=4)
  assert ids.shape == (2, run.config.data.max_len) and ids.max() < run.tokenizer.vocab_size


def test_load_run_in_the_other_block_layout_samples_the_same(runs):
  """A run sampled with its blocks scanned or unrolled (converted at load) gives the same tokens."""
  trained = generate.load_run(runs[0])
  other = generate.load_run(runs[0], scan_layers=not trained.config.model.scan_layers)
  assert other.config.model.scan_layers != trained.config.model.scan_layers
  assert ("blocks" in str(jax.tree.structure(other.params))) == other.config.model.scan_layers
  np.testing.assert_array_equal(other.generate_ids(4, sampler="ddim", steps=5, seed=2),
                                trained.generate_ids(4, sampler="ddim", steps=5, seed=2))


def test_different_config_is_refused(runs):
  c = tiny.get_config().copy_and_resolve_references()
  with c.unlocked():
    c.model.width = 64
  with pytest.raises(CheckpointError, match="different config.*model.width"):
    train.train_and_evaluate(c, runs[0])


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, **(env or {})}, timeout=300)


def test_cli_sample_writes_text_and_settings(runs, tmp_path):
  out = str(tmp_path / "s")
  r = _cli("experiments.sample", "--workdir", runs[0], "--num_samples", "4", "--sampler", "ddim",
           "--steps", "5", "--out", out)
  assert r.returncode == 0, r.stderr[-2000:]
  assert len(open(out + ".txt").read().splitlines()) == 4
  meta = [json.loads(l) for l in open(out + ".jsonl")]
  assert meta[0]["sampler"] == "ddim" and meta[0]["steps"] == 5 and meta[0]["checkpoint_step"] == 6
  # the other block layout (tiny trains scanned) writes the same samples
  r = _cli("experiments.sample", "--workdir", runs[0], "--num_samples", "4", "--sampler", "ddim",
           "--steps", "5", "--out", out + "_unrolled", "--layers", "unrolled")
  assert r.returncode == 0, r.stderr[-2000:]
  assert open(out + "_unrolled.txt").read() == open(out + ".txt").read()


def test_cli_train_then_sample(tmp_path, tfds_dir):
  require_synthetic_e2e()
  w = str(tmp_path / "cli")
  r = _cli("experiments.train", "--config", "configs/tiny.py", "--workdir", w,
           "--config.train.num_train_steps=2", "--config.eval.num_samples=0")
  assert r.returncode == 0, r.stderr[-2000:]
  assert sorted(os.listdir(os.path.join(w, "checkpoints"))) == ["2"]


@pytest.mark.parametrize("args,env,msg", [
    (["--config", "configs/tiny.py"], {"DIFFUSION_TEXT_DATA_DIR": "/nonexistent/data"},
     "data dir not found: /nonexistent/data"),
    (["--config", "configs/tiny.py", "--config.eval.sample_steps=500"], {}, "eval.sample_steps"),
    # an MR longer than the model takes is refused, not cut
    (["--config", "configs/tiny.py:seq2seq", "--config.data.cut_sources=False"], {},
     "train sources are longer than the model takes (20 tokens, data.max_src_len)"),
])
def test_cli_bad_input_is_one_line_error(tmp_path, tfds_dir, args, env, msg):
  w = str(tmp_path / "bad")
  r = _cli("experiments.train", *args, "--workdir", w, env=env)
  assert r.returncode == 1
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and msg in last, r.stderr[-1000:]
  assert not os.path.exists(os.path.join(w, "checkpoints"))


@pytest.mark.parametrize("module,args,status,msg", [
    ("experiments.train", ["--config", "configs/nope.py:cpu"], 2,
     "config file configs/nope.py not found"),
    ("experiments.train", ["--config", "BAD_CONFIG"], 2, "SyntaxError"),
    ("experiments.train", ["--config", "configs/tiny.py", "--config.train.batchsize=3"], 2,
     'unknown config key in an override: train.batchsize (Did you mean "batch_size"'),
    ("experiments.train", ["--config", "configs/tiny.py:nonsense"], 2,
     "config configs/tiny.py:nonsense: ValueError: unknown variant 'nonsense'"),
    ("experiments.bench", ["--quick", "--nonsense_flag=1"], 2, "nonsense_flag"),
    ("experiments.train", ["--config", "configs/tiny.py", "--config.train.batch_size=abc"], 2,
     "--config.train.batch_size=abc"),
    ("experiments.train", ["--config", "configs/tiny.py", "--stop_at_step=0"], 2,
     "--stop_at_step=0"),
    ("experiments.train", ["--config", "configs/tiny.py", "stray"], 2, "unexpected arguments"),
    ("experiments.evaluate", ["--mbr_samples=0"], 2, "--mbr_samples=0"),
    ("experiments.sample", ["--steps=0"], 2, "--steps=0"),
])
def test_cli_bad_flags_are_one_line_errors(tmp_path, module, args, status, msg):
  """Flags and config files that fail to parse or load end in one ``error:`` line (the last thing
  printed, no traceback) and a non-zero status, before anything is written."""
  bad = tmp_path / "bad_config.py"
  bad.write_text("def get_config(:\n")
  w = str(tmp_path / "w")
  r = _cli(module, *[str(bad) if a == "BAD_CONFIG" else a for a in args], "--workdir", w)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == status and lines[-1].startswith("error:") and msg in lines[-1], r.stderr
  assert "Traceback" not in r.stderr and not os.path.exists(w)


@pytest.mark.parametrize("module", ["experiments.sample", "experiments.evaluate"])
def test_cli_out_under_a_file_fails_before_any_work(tmp_path, module):
  """An --out whose parent is a regular file is refused up front, naming the flag."""
  (tmp_path / "afile").write_text("x")
  r = _cli(module, "--workdir", str(tmp_path / "no_run"), "--out", str(tmp_path / "afile" / "o"))
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1 and lines[-1] == (
      f"error: --out {tmp_path / 'afile' / 'o'}: {tmp_path / 'afile'} is not a directory"), r.stderr
  assert "Traceback" not in r.stderr


@pytest.mark.parametrize("flag,value,msg", [
    ("--score_temp", "0", "error: --score_temp must be > 0, got 0.0"),
    ("--grid_power", "0.5", "error: --grid_power must be >= 1, got 0.5")])
def test_cli_sampling_settings_out_of_range_are_refused(tmp_path, flag, value, msg):
  """A score temperature of 0 would divide by zero in every step; a grid power below 1 crowds the
  steps away from T: refused before a run is read."""
  r = _cli("experiments.evaluate", "--workdir", str(tmp_path / "no_run"), flag, value)
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == msg, r.stderr


def test_cli_workdir_that_is_a_file(tmp_path, tfds_dir):
  require_synthetic_e2e()
  f = tmp_path / "a_file"
  f.write_text("x")
  r = _cli("experiments.train", "--config", "configs/tiny.py", "--workdir", str(f))
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
      f"error: --workdir {f} exists and is not a directory")


def test_cli_sample_on_non_run(tmp_path):
  r = _cli("experiments.sample", "--workdir", str(tmp_path))
  assert r.returncode == 1 and "is not a training run" in r.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def s2s_run(tmp_path_factory, tfds_dir):
  require_synthetic_e2e()
  w = str(tmp_path_factory.mktemp("runs") / "s2s")
  train.train_and_evaluate(tiny.get_config("seq2seq"), w)
  return w


def test_seq2seq_sampling_keeps_source_bit_identical(s2s_run):
  run = generate.load_run(s2s_run)
  srcs = ["name : Aromi | food : Thai", "name : The Eagle | area : riverside | near : Burger King"]
  ids_in, mask = run.pack_sources(srcs)
  for sampler, eta in (("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpm++2m", 0.0)):
    out = run.generate_ids(sources=srcs, sampler=sampler, steps=6, eta=eta)
    np.testing.assert_array_equal(out[mask == 0], ids_in[mask == 0])
  try:
    for rounding in ("model", "nearest"):  # one step, one denoiser call: the source still holds
      run.config.sample.rounding = rounding
      out = run.generate_ids(sources=srcs, sampler="dpm++2m", steps=1)
      assert out.shape == ids_in.shape
      np.testing.assert_array_equal(out[mask == 0], ids_in[mask == 0])
  finally:  # the run is a shared fixture
    run.config.sample.rounding = "model"
  texts = run.generate(sources=srcs, steps=6)
  assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
  # a string is one source, not a list of characters
  assert run.generate(sources=srcs[0], steps=6) == run.generate(sources=srcs[:1], steps=6)
  with pytest.raises(ValueError, match="needs `sources`"):
    run.generate(2)
  too_long = " | ".join(["name : Aromi", *[f"food : Thai{k}" for k in range(10)]])
  assert len(run.generate(sources=[srcs[0], too_long], steps=2)) == 2  # tiny cuts (cut_sources)
  run.config.data.cut_sources = False
  with pytest.raises(DataError, match=r"1 of 2 sources are longer than the model takes \(20 tokens"):
    run.generate(sources=[srcs[0], too_long], steps=2)


def test_encoder_decoder_denoiser_trains_and_samples(tmp_path, tfds_dir):
  """``model.arch=encoder_decoder`` through the whole pipeline: training (CE, condition dropout),
  checkpoint, sampling with the source held bit-identical, and the held-out evaluation."""
  require_synthetic_e2e()
  c = tiny.get_config("cfg")
  c.unlock()
  c.model.update(arch="encoder_decoder", logits_head="full")
  c.data.target_start = "fixed"
  w = str(tmp_path / "encdec")
  train.train_and_evaluate(c, w)
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert all(np.isfinite(d["train/loss"]) for d in lines if "train/loss" in d)
  assert any("eval/loss" in d for d in lines)
  run = generate.load_run(w)
  assert "encoder" in run.params["denoiser"]
  srcs = ["name : Aromi | food : Thai", "name : The Eagle | area : riverside | near : Burger King"]
  ids_in, mask = run.pack_sources(srcs)
  assert int(np.argmax(mask[0])) == c.data.max_src_len + 2
  for sampler in ("ddpm", "dpm++2m"):
    out = run.generate_ids(sources=srcs, sampler=sampler, steps=4)
    np.testing.assert_array_equal(out[mask == 0], ids_in[mask == 0])
  # samplers encode the source once (decoding.decode_ids): the same x0 estimate as the encoder at
  # every step, for an x_t whose source positions hold the source, as a sampler's always do
  from diffusion_text import denoiser, embeddings, process
  x_cond = embeddings.embed(embeddings.table(run.params, run.config.model), jnp.asarray(ids_in))
  z = process.apply_mask(jax.random.normal(jax.random.PRNGKey(0), x_cond.shape), x_cond,
                         jnp.asarray(mask))
  S = run.model.cfg.src_len
  memory = denoiser.encode_source(run.model.cfg, run.params, x_cond[:, :S])
  t = jnp.full((len(srcs),), 50, jnp.int32)
  with_memory = run.model.apply({"params": run.params}, z, t, None, memory=memory)
  np.testing.assert_allclose(with_memory, run.model.apply({"params": run.params}, z, t, None),
                             rtol=1e-5, atol=1e-6)


def test_seq2seq_evaluation_with_mbr(s2s_run):
  from diffusion_text import evaluate
  from diffusion_text.data import e2e
  run = generate.load_run(s2s_run)
  result, outputs = evaluate.evaluate_run(run, split="validation", num_inputs=3, mbr_samples=2,
                                          steps=4)
  assert result["num_inputs"] == 3 and result["mbr_samples"] == 2
  # the BLEU is sacrebleu's corpus BLEU of exactly the outputs returned against their references
  assert result["bleu"] == metrics.bleu([o["hyp"] for o in outputs],
                                        [o["refs"] for o in outputs])["bleu"]
  assert "self_bleu" in result
  assert all(len(o["samples"]) == 2 and o["hyp"] in o["samples"] for o in outputs)
  # references are grouped per distinct MR: the fixture's validation split has 12 per MR
  assert [len(o["refs"]) for o in outputs] == [12, 12, 12]
  assert len({o["src"] for o in outputs}) == 3
  # the anchor beside the BLEU: the inputs themselves scored against the same references
  assert result["source_bleu"] == metrics.bleu([o["src"] for o in outputs],
                                               [o["refs"] for o in outputs])["bleu"]
  # the slot rerank: each output has the fewest slot errors (+ cut off) of its samples
  rr, rr_out = evaluate.evaluate_run(run, split="validation", num_inputs=3, mbr_samples=2, steps=4,
                                     rerank="slots")
  assert rr["rerank"] == "slots" and result["rerank"] == "mbr"
  assert all(e2e.errors(o["src"], o["hyp"]) == min(e2e.errors(o["src"], x) for x in o["samples"])
             for o in rr_out)
  # E2E MRs: slot errors beside BLEU, per output and in all
  assert result["slots"] == e2e.score(outputs)
  assert result["slot_error_rate"] == result["slots"]["slot_error_rate"]
  assert [o["slot_errors"] for o in outputs] == [
      {f: v for f, v in e2e.check(o["src"], o["hyp"]).items() if v != "ok"} for o in outputs]


def test_ar_baseline_trains_and_decodes(tmp_path, tfds_dir):
  """The AR baseline goes through the same loop, checkpoints and evaluation."""
  require_synthetic_e2e()
  from diffusion_text import evaluate
  from diffusion_text.data import e2e
  w = str(tmp_path / "ar")
  train.train_and_evaluate(tiny.get_config("ar"), w)
  run = generate.load_run(w)
  srcs = ["name : Aromi | food : Thai"]
  greedy = run.generate_ids(sources=srcs, sampler="greedy")
  np.testing.assert_array_equal(run.generate_ids(sources=srcs, sampler="beam", steps=1), greedy)
  result, outs = evaluate.evaluate_run(run, split="validation", num_inputs=2, sampler="beam",
                                       steps=2)
  assert result["bleu"] == metrics.bleu([o["hyp"] for o in outs], [o["refs"] for o in outs])["bleu"]
  assert result["sampler"] == "beam" and result["steps"] == 2
  # the n-best list: its first beam is beam search's text; the slot rerank keeps, of the beams,
  # the first with the fewest slot errors
  nbest = run.generate_nbest([o["src"] for o in outs], 2)
  assert [b[0] for b in nbest] == [o["hyp"] for o in outs] and all(len(b) == 2 for b in nbest)
  rr, rr_outs = evaluate.evaluate_run(run, split="validation", num_inputs=2, sampler="beam",
                                      steps=2, rerank="slots")
  assert [o["samples"] for o in rr_outs] == nbest
  assert [o["hyp"] for o in rr_outs] == e2e.rerank([o["src"] for o in outs], nbest)
  assert rr["rerank"] == "slots" and rr["mbr_samples"] == 1
  with pytest.raises(ValueError, match="n-best"):
    evaluate.evaluate_run(run, num_inputs=2, sampler="beam", steps=2, rerank="slots",
                          mbr_samples=2)
  # ancestral sampling at a temperature (eta): seeded, and the evaluation's file says its eta
  drawn = run.generate_ids(sources=srcs * 8, sampler="sample", eta=1.0, seed=3)
  np.testing.assert_array_equal(
      drawn, run.generate_ids(sources=srcs * 8, sampler="sample", eta=1.0, seed=3))
  assert len({tuple(row) for row in drawn}) > 1
  assert evaluators.EVALUATORS["generate"].file_stem(
      run, sampler="sample", eta=0.7, num_inputs=2).endswith("_n2_eta0.7")
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any("train/nll" in d for d in lines) and any("eval/nll" in d for d in lines)
  assert any(d.get("eval/nll_bits_per_token", 0) > 0 for d in lines)
  nll = heldout.nll_run(run, split="validation", num_inputs=8, batch_size=8)
  assert nll["estimator"] == "exact AR NLL" and nll["bits_per_token"] > 0
  _check_distillation(run, tmp_path)


def _check_distillation(teacher, tmp_path):
  """experiments.distill: one teacher output per distinct train source (its greedy decode, in the
  sources' order), the real references for valid/test; an existing --out is never overwritten."""
  from diffusion_text import distill, evaluate
  from diffusion_text.data import mr
  out = tmp_path / "distilled"
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out), "--limit", "5",
           "--batch_size", "2", "--recombine", "3", "--seed", "1")
  assert r.returncode == 0, r.stderr[-2000:]
  info = json.load(open(out / distill.INFO_FILE))
  rows = [json.loads(l) for l in open(out / "train.jsonl")]
  data = pipeline.prepare_sources(teacher.config.data)
  srcs = [s for s, _ in evaluate.grouped_references(data["train"], 5)]
  evaluation = [pipeline._text(data[s][i]["src"]) for s in ("validation", "test")
                for i in range(len(data[s]))]
  srcs += distill.recombine_sources(srcs, 3, seed=1, exclude=evaluation)
  assert not {mr.canonical(s) for s in srcs[5:]} & {mr.canonical(s) for s in evaluation}
  want = teacher.generate(sources=srcs, sampler="greedy")
  assert [(x["src"], x["trg"]) for x in rows] == [(s, w) for s, w in zip(srcs, want) if w.strip()]
  assert info["train_sources"] == 5 and info["recombined_sources"] == 3
  assert info["excluded_evaluation_mrs"] == len({mr.canonical(s) for s in evaluation}) > 0
  assert info["pairs"]["train"] == len(rows)
  valid = [json.loads(l) for l in open(out / "valid.jsonl")]
  assert len(valid) == len(data["validation"]) == info["pairs"]["validation"]
  assert valid[0] == {"src": pipeline._text(data["validation"][0]["src"]),
                      "trg": pipeline._text(data["validation"][0]["tgt"])}
  again = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out))
  assert again.returncode != 0 and again.stderr.strip().splitlines()[-1].startswith("error:")
  assert "exists" in again.stderr
  # --require_values drops recombined pairs whose output misses a value; --heldout writes new
  # skeletons (unseen apart from the ignored values) with the teacher's outputs
  out2 = tmp_path / "distilled_heldout"
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out2), "--limit", "5",
           "--batch_size", "2", "--recombine", "3", "--seed", "1", "--require_values", "name",
           "--heldout", "2", "--heldout_ignore", "name")
  assert r.returncode == 0, r.stderr[-2000:]
  info2 = json.load(open(out2 / distill.INFO_FILE))
  rows2 = [(x["src"], x["trg"]) for x in map(json.loads, open(out2 / "train.jsonl"))]
  kept = [(s, w) for s, w in zip(srcs, want) if w.strip()
          and (s in srcs[:5] or distill.mentions_values(s, w, ("name",)))]
  assert rows2 == kept and info2["recombined_kept"] == len(kept) - 5
  held = [json.loads(l) for l in open(out2 / distill.HELDOUT_FILE)]
  assert len(held) == info2["pairs"]["heldout"] <= 2
  train_keys = {distill.skeleton(s, ("name",)) for s in srcs}
  assert all(distill.skeleton(h["src"], ("name",)) not in train_keys for h in held)
  # --require_faithful keeps only outputs without a slot error (train and recombined sources)
  out3 = tmp_path / "distilled_faithful"
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out3), "--limit", "5",
           "--batch_size", "2", "--recombine", "3", "--seed", "1", "--require_faithful")
  assert r.returncode == 0, r.stderr[-2000:]
  from diffusion_text.data import e2e
  faithful = [(s, w) for s, w in zip(srcs, want)
              if w.strip() and all(v == "ok" for v in e2e.check(s, w).values())]
  info3 = json.load(open(out3 / distill.INFO_FILE))
  assert [(x["src"], x["trg"]) for x in map(json.loads, open(out3 / "train.jsonl"))] == faithful
  assert info3["unfaithful_dropped"] == sum(bool(w.strip()) for w in want) - len(faithful)
  # --slot_candidates: per source the least slot-erroneous of the greedy decode and samples
  out4 = tmp_path / "distilled_candidates"
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out4), "--limit", "5",
           "--batch_size", "2", "--slot_candidates", "3", "--candidate_eta", "1.0")
  assert r.returncode == 0, r.stderr[-2000:]
  drawn = [distill.teacher_outputs(teacher, srcs[:5], sampler="sample", steps=1, batch_size=2,
                                   eta=1.0, seed=k * 5) for k in (1, 2)]
  best = e2e.rerank(srcs[:5], [list(c) for c in zip(want[:5], *drawn)])
  rows4 = [x["trg"] for x in map(json.loads, open(out4 / "train.jsonl"))]
  assert rows4 == [b for b in best if b.strip()]
  info4 = json.load(open(out4 / distill.INFO_FILE))
  assert info4["slot_candidates"] == 3 and info4["candidate_eta"] == 1.0
  assert info4["train_slot_error_rate"] == e2e.score(
      [{"src": s, "hyp": b} for s, b in zip(srcs, best)])["slot_error_rate"]
  # with --sampler beam the candidates are the beam's n-best list; more than the beam is refused
  out5 = tmp_path / "distilled_beam_rerank"
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(out5), "--limit", "5",
           "--batch_size", "2", "--sampler", "beam", "--steps", "3", "--slot_candidates", "2")
  assert r.returncode == 0, r.stderr[-2000:]
  beams = [b[:2] for b in teacher.generate_nbest(srcs[:5], 3)]
  assert [x["trg"] for x in map(json.loads, open(out5 / "train.jsonl"))] == [
      t for t in e2e.rerank(srcs[:5], beams) if t.strip()]
  assert json.load(open(out5 / distill.INFO_FILE))["candidate_eta"] is None
  r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(tmp_path / "no"),
           "--limit", "5", "--sampler", "beam", "--steps", "2", "--slot_candidates", "3")
  assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error:")
  assert "--steps >= 3" in r.stderr and not (tmp_path / "no").exists()
  # a sampled teacher: its temperature is recorded, and the same seed writes the same data
  sampled = [tmp_path / f"distilled_sampled{k}" for k in (0, 1)]
  for o in sampled:
    r = _cli("experiments.distill", "--teacher", teacher.workdir, "--out", str(o), "--limit", "5",
             "--sampler", "sample", "--eta", "1.0", "--seed", "2")
    assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(sampled[0] / distill.INFO_FILE))["eta"] == 1.0
  assert (sampled[0] / "train.jsonl").read_text() == (sampled[1] / "train.jsonl").read_text()


def test_steps_study_writes_table_json_and_plot(s2s_run, tmp_path):
  out = str(tmp_path / "study")
  r = _cli("experiments.steps_study", "--workdirs", s2s_run, "--samplers", "ddim,dpm++2m",
           "--steps", "2,4", "--num_inputs", "2", "--out", out)
  assert r.returncode == 0, r.stderr[-2000:]
  points = json.load(open(out + ".json"))
  assert {(p["sampler"], p["steps"]) for p in points} == {
      ("ddim", 2), ("ddim", 4), ("dpm++2m", 2), ("dpm++2m", 4)}
  assert all(p["num_inputs"] == 2 for p in points)
  # each point is the evaluation of that sampler and step count (same seed, same inputs)
  from diffusion_text import evaluate
  want, _ = evaluate.evaluate_run(generate.load_run(s2s_run), num_inputs=2, sampler="ddim", steps=4)
  got = next(p for p in points if (p["sampler"], p["steps"]) == ("ddim", 4))
  assert (got["bleu"], got["dist_1"]) == (want["bleu"], want["dist_1"])
  assert "self-cond" in points[0]["run"] and "| dpm++2m |" in open(out + ".md").read()
  assert open(out + ".png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_nll_evaluator_for_diffusion_and_ar(s2s_run, tmp_path):
  run = generate.load_run(s2s_run)
  res = heldout.nll_run(run, split="validation", num_inputs=10, num_t=4, batch_size=8)
  assert res["sequences"] == 10 and res["bits_per_token"] > 0
  assert res["ci95"][0] <= res["bits_per_token"] <= res["ci95"][1]
  assert {"decoder_bits_per_token", "diffusion_bits_per_token", "prior_bits_per_token"} <= set(res)
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "nll", "--num_inputs",
           "4", "--nll_t", "2", "--out", str(tmp_path / "nll"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(tmp_path / "nll.json"))["sequences"] == 4


def test_loss_evaluator_reproduces_the_training_held_out_loss(s2s_run, tmp_path):
  """``--evaluators loss`` on the last checkpoint recomputes exactly what the loop logged at its
  last evaluation (same EMA parameters, batches and seeds); ``--out`` with two evaluators, which
  would write one file twice, is refused before anything is loaded."""
  logged = [json.loads(l) for l in open(os.path.join(s2s_run, "metrics.jsonl"))]
  last = [d for d in logged if "eval/loss" in d][-1]
  run = generate.load_run(s2s_run)
  assert last["step"] == run.step
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "loss")
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.load(open(os.path.join(s2s_run, "eval", f"validation_step{run.step}_loss.json")))
  assert got["num_batches"] == run.config.eval.num_batches and got["checkpoint_step"] == run.step
  for k in ("loss", "mse", "rounding", "prior"):
    np.testing.assert_allclose(got[k], last[f"eval/{k}"], rtol=1e-5, err_msg=k)
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "loss,nll",
           "--out", str(tmp_path / "x"))
  assert r.returncode != 0 and "--out names one result" in r.stderr, r.stderr[-2000:]
  assert not list(tmp_path.iterdir())


def test_evaluation_files_name_every_setting(s2s_run):
  """Evaluations of one checkpoint with other settings land in other files (a clamped evaluation
  once overwrote the unclamped one)."""
  from diffusion_text import evaluate
  names = {evaluate.result_name("validation", 6, "ddim", 2, 1, **kw) for kw in
           ({}, {"clamp": True}, {"num_inputs": 2}, {"seed": 1}, {"clamp": True, "num_inputs": 2},
            {"collapse": True}, {"rerank": "slots"}, {"score_temp": 0.9},
            {"logit_temp": 0.5}, {"grid_power": 1.5}, {"rounding": "nearest"})}
  assert len(names) == 11 and "validation_step6_ddim2_mbr1" in names
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--num_inputs", "2", "--sampler", "ddim",
           "--steps", "2", "--clamp", "--collapse_repeats", "--score_temp", "0.9",
           "--grid_power", "2", "--rounding", "nearest")
  assert r.returncode == 0, r.stderr[-2000:]
  step = generate.load_run(s2s_run).step
  name = f"validation_step{step}_ddim2_mbr1_clamp_collapse_n2_st0.9_gp2_roundnearest.json"
  res = json.load(open(os.path.join(s2s_run, "eval", name)))
  assert res["clamp"] is True and res["collapse"] is True and res["num_inputs"] == 2
  assert res["score_temp"] == 0.9 and res["grid_power"] == 2.0 and res["rounding"] == "nearest"
  assert "outputs" not in res
  rows = [json.loads(l) for l in open(os.path.join(s2s_run, "eval", name[:-5] + ".jsonl"))]
  assert len(rows) == 2 and {"src", "hyp", "refs", "samples"} <= set(rows[0])
  for row in rows:  # a tiny model repeats words; collapsed outputs never do
    words = row["hyp"].split()
    assert all(a != b for a, b in zip(words, words[1:]))


def test_evaluate_inputs_scores_a_file_of_pairs_with_grouped_references(s2s_run, tmp_path):
  """``--inputs``: any JSON Lines file of src/trg pairs (a held-out set of new MRs) is scored like
  a split, its references grouped by source, under a file name of its own; a bad line or another
  evaluator is one error line."""
  pairs = [("name : Aromi | food : Thai", "Aromi serves Thai food ."),
           ("name : Aromi | food : Thai", "Thai food at Aromi ."),
           ("name : The Eagle | area : riverside", "The Eagle is by the river .")]
  path = tmp_path / "new_mrs.jsonl"
  path.write_text("".join(json.dumps({"src": s, "trg": t}) + "\n" for s, t in pairs))
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--inputs", str(path), "--sampler",
           "ddim", "--steps", "2")
  assert r.returncode == 0, r.stderr[-2000:]
  step = generate.load_run(s2s_run).step
  found = sorted(f for f in os.listdir(os.path.join(s2s_run, "eval"))
                 if f.startswith(f"inputs-new_mrs_step{step}_ddim2_mbr1"))
  assert [os.path.splitext(f)[1] for f in found] == [".json", ".jsonl"]
  res = json.load(open(os.path.join(s2s_run, "eval", found[0])))
  assert res["num_inputs"] == 2 and res["inputs"] == str(path)
  rows = [json.loads(l) for l in open(os.path.join(s2s_run, "eval", found[1]))]
  assert [row["refs"] for row in rows] == [[pairs[0][1], pairs[1][1]], [pairs[2][1]]]
  path.write_text(path.read_text() + "not json\n")
  bad = _cli("experiments.evaluate", "--workdir", s2s_run, "--inputs", str(path))
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1].startswith(f"error: {path}:4:")
  other = _cli("experiments.evaluate", "--workdir", s2s_run, "--inputs", str(path),
               "--evaluators", "nll")
  assert other.returncode != 0 and "generate evaluator" in other.stderr.strip().splitlines()[-1]


def test_lm_score_prefers_real_text_to_shuffled_tokens(tmp_path, tfds_dir):
  """A teacher trained for a short while on E2E: real MR->text pairs score a lower perplexity than
  the same texts with their words shuffled."""
  require_synthetic_e2e()
  from diffusion_text import evaluate
  cfg = tiny.get_config("ar")
  with cfg.unlocked():
    cfg.train.update(num_train_steps=150, eval_every_steps=150, checkpoint_every_steps=150)
    cfg.eval.num_samples = 0
  w = str(tmp_path / "teacher")
  train.train_and_evaluate(cfg, w)
  teacher = generate.load_run(w)
  data = pipeline.prepare_sources(teacher.config.data)["train"]
  rows = [data[i] for i in range(64)]
  srcs = [r["src"].decode() for r in rows]
  texts = [r["tgt"].decode() for r in rows]
  rng = np.random.default_rng(0)
  shuffled = [" ".join(rng.permutation(t.split())) for t in texts]
  real = evaluate.lm_score(teacher, texts, srcs)["lm_score"]
  fake = evaluate.lm_score(teacher, shuffled, srcs)["lm_score"]
  assert 1.0 < real < fake, (real, fake)
  with pytest.raises(ValueError, match="given their sources"):
    evaluate.lm_score(teacher, texts)


def test_unconditional_evaluation_scores_samples_beside_real_text(runs, s2s_run, tmp_path):
  """An unconditional run's evaluation reports its samples' lm-score, dist-1 and self-BLEU beside
  the same measures of as many distinct real texts of the split, under the same AR LM teacher; a
  seq2seq run's outputs get the same lm-score and self-BLEU across inputs (plan-then-write)."""
  from diffusion_text import evaluate, metrics
  cfg = tiny.get_config("ar")
  with cfg.unlocked():
    cfg.data.update(task="lm", max_len=32, max_src_len=0)
    cfg.train.update(num_train_steps=20, eval_every_steps=20, checkpoint_every_steps=20)
    cfg.eval.num_samples = 0
  w = str(tmp_path / "lm_teacher")
  train.train_and_evaluate(cfg, w)
  teacher, run = generate.load_run(w), generate.load_run(runs[0])
  result, outputs = evaluate.evaluate_run(run, num_inputs=6, teacher=teacher, sampler="ddim",
                                          steps=5)
  real = evaluate.real_texts(run, "validation", 6)
  assert len(outputs) == 6 and len(set(real)) == 6
  assert result["real_lm_score"] == pytest.approx(evaluate.lm_score(teacher, real)["lm_score"])
  assert result["real_dist_1"] == pytest.approx(metrics.dist_n(real, 1))
  assert result["real_self_bleu"] == pytest.approx(metrics.self_bleu([real])["self_bleu"])
  uncond = [o["hyp"] for o in outputs]
  assert result["lm_score"] == pytest.approx(evaluate.lm_score(teacher, uncond)["lm_score"])
  assert result["self_bleu"] == pytest.approx(metrics.self_bleu([uncond])["self_bleu"])
  assert result["task"] == "lm" and result["steps"] == 5 and result["clamp"] is False
  s2s = generate.load_run(s2s_run)
  result, outputs = evaluate.evaluate_run(s2s, num_inputs=4, teacher=teacher, steps=4)
  hyps = [o["hyp"] for o in outputs]
  assert result["lm_score"] == pytest.approx(evaluate.lm_score(teacher, hyps)["lm_score"])
  assert result["corpus_self_bleu"] == pytest.approx(metrics.self_bleu([hyps])["self_bleu"])
  assert result["dist_1"] == pytest.approx(metrics.dist_n(hyps, 1))


def test_decided_reads_the_words_at_low_noise_and_loses_them_at_high(s2s_run):
  """evaluate --evaluators decided: per t, the words one call names. A denoiser that reads the
  nearest word to x_t names nearly every word at the lowest t and few at T, so half are decided
  in between; the counts are the split's target words; the CLI writes the table."""
  from diffusion_text import decided
  run = generate.load_run(s2s_run)

  class ReadsXt:  # a denoiser that predicts the nearest word to x_t itself
    def apply(self, variables, z, t, x_sc, return_logits=False, **_):
      logits = embeddings.neg_sq_distance(variables["params"]["embedding"], z)
      return (z, logits) if return_logits else z

  oracle = dataclasses.replace(run, model=ReadsXt())
  res = decided.decided_run(oracle, num_inputs=8)
  rows = res["rows"]
  assert [r["t"] for r in rows] == sorted({r["t"] for r in rows}) and rows[-1]["t"] == (
      run.diffusion.num_steps)
  assert rows[0]["word_acc"] > 0.9 > 0.5 > rows[-1]["word_acc"], rows
  assert rows[0]["t_fraction"] < res["half_decided"] < 1.0
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "decided",
           "--num_inputs", "4")
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.load(open(os.path.join(s2s_run, "eval", f"decided_step{run.step}_n4.json")))
  assert out["num_inputs"] == 4 and len(out["rows"]) == len(rows)
  assert all(0.0 <= x["word_acc"] <= 1.0 and 0.0 <= x["pad_acc"] <= 1.0 for x in out["rows"])


def test_grid_power_samples_on_the_power_grid(s2s_run):
  """sample.grid_power: the run's decoder visits process.timestep_grid(T, K, power), the grid a
  caller of decode_ids would pass by hand."""
  from diffusion_text import decoding, families, process, samplers
  run = generate.load_run(s2s_run)
  ids, mask = run.pack_sources(["name : Aromi | food : Thai", "name : The Eagle | area : riverside"])
  seen = []

  def spy(*args, grid=None, **kw):
    seen.append(None if grid is None else np.asarray(grid).tolist())
    return sample(*args, grid=grid, **kw)

  sample = samplers.sample
  samplers.sample = spy
  try:
    for power in (3.0, 1.0):
      with run.config.unlocked():
        run.config.sample.grid_power = power
      fn = families.family_of(run.config).make_decoder(run.model, run.config, "ddpm", 4, False, 0.0)
      fn(run.params, jax.random.PRNGKey(4), ids, mask)
      decoding.generate_ids(decoding.make_decoder(run, sampler="ddpm", steps=4), ids, mask)
  finally:
    samplers.sample = sample
  power_grid = process.timestep_grid(run.diffusion.num_steps, 4, 3.0).tolist()
  # the run's decoder and the control tasks' decoder both visit the power grid; at 1, the default
  assert seen == [power_grid, power_grid, None, None], seen


@pytest.mark.parametrize("args,msg", [
    (["--logit_temp", "0.5"], "--logit_temp needs a softmax x0 head"),
    (["--grid_power", "2", "--evaluators", "nll"], "options of a diffusion run's sampling"),
    (["--cfg_scale", "2"], "not trained with condition dropout"),
    (["--slot_guidance", "1"], "needs a softmax x0 head or full logits")])
def test_cli_sampling_settings_where_nothing_would_apply_them(s2s_run, args, msg):
  """A logit temperature on a linear x0 head, a grid for an evaluator that samples on none: one
  error line, nothing written."""
  eval_dir = os.path.join(s2s_run, "eval")
  listing = lambda: sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
  before = listing()  # the tests before this one may or may not have evaluated the run
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--num_inputs", "2", *args)
  last = r.stderr.strip().splitlines()[-1]
  assert r.returncode == 1 and last.startswith("error:") and msg in last, r.stderr[-2000:]
  assert listing() == before


def test_half_decided_interpolates_where_word_accuracy_crosses_one_half():
  from diffusion_text import decided
  rows = [{"t_fraction": f, "word_acc": a} for f, a in ((0.1, 0.9), (0.5, 0.7), (0.7, 0.3),
                                                        (1.0, 0.0))]
  assert decided.half_decided(rows) == pytest.approx(0.6)
  assert decided.half_decided([{**r, "word_acc": 0.6} for r in rows]) == 1.0
  assert decided.half_decided([{**r, "word_acc": 0.4} for r in rows]) == 0.0


def test_recovery_diagnostic_scores_each_start_level(s2s_run):
  run = generate.load_run(s2s_run)
  T = run.diffusion.num_steps
  rows = recovery.recovery(run, [1, T], num_inputs=4, steps=3, sampler="ddim")
  assert [r["t0"] for r in rows] == [1, T] and rows[0]["alpha_bar"] > rows[1]["alpha_bar"]
  # each row's target is the decoded x0 of the first input (every 10th of the split)
  assert all(r["target"] == rows[0]["target"] for r in rows) and rows[0]["target"].split()

  class ReadsXt:  # a denoiser that predicts the nearest word to x_t itself
    def apply(self, variables, z, t, x_sc, return_logits=False, **_):
      logits = embeddings.neg_sq_distance(variables["params"]["embedding"], z)
      return (z, logits) if return_logits else z

  oracle = dataclasses.replace(run, model=ReadsXt())
  near, far = recovery.recovery(oracle, [1, T], num_inputs=4, steps=2, sampler="ddim")
  # at t0=1 the target is in x_t0 and the one-step prediction reads it off; at T it is gone
  assert near["token_acc"] > 0.9 and far["token_acc"] < 0.5, (near, far)
  assert near["one_step_bleu"] > 50 > far["one_step_bleu"], (near, far)
  assert near["bleu"] > 50 > far["bleu"], (near, far)  # the trajectory from x_1 keeps the text
  with pytest.raises(ValueError, match="t0 must be"):
    recovery.recovery(run, [T + 1], num_inputs=2, steps=2, sampler="ddim")
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "recovery", "--t0", "1",
           "--num_inputs", "2", "--steps", "2", "--sampler", "ddim")
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.load(open(os.path.join(s2s_run, "eval", f"recovery_step{run.step}_ddim2_n2.json")))
  assert [row["t0"] for row in out["rows"]] == [1]
  # an earlier checkpoint by step (its number names the file); a step that was never saved is refused
  ckpt = checkpointing.Checkpointer(os.path.join(s2s_run, "checkpoints"), async_save=False)
  saved = ckpt.all_steps()
  ckpt.close()
  assert 3 in saved and 5 not in saved
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "recovery", "--t0", "1",
           "--num_inputs", "2", "--steps", "2", "--sampler", "ddim", "--checkpoint", "3")
  assert r.returncode == 0, r.stderr[-2000:]
  assert os.path.exists(os.path.join(s2s_run, "eval", "recovery_step3_ddim2_n2.json"))
  r = _cli("experiments.evaluate", "--workdir", s2s_run, "--evaluators", "recovery", "--t0", "1",
           "--checkpoint", "5")
  assert r.returncode != 0 and "no checkpoint at step 5" in r.stderr, r.stderr[-2000:]
  # bad evaluator names and start levels are one line each
  for args, msg in ((["--evaluators", "recovery,bleu"], "unknown evaluator(s) ['bleu']"),
                    (["--evaluators", "recovery", "--t0", "x"], "--t0"),
                    (["--evaluators", "recovery", "--t0", str(T + 1)], "t0 must be in")):
    r = _cli("experiments.evaluate", "--workdir", s2s_run, *args)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error:"), r.stderr
    assert msg in r.stderr.strip().splitlines()[-1], r.stderr[-500:]


def _tensorboard_scalars(logdir: str) -> dict:
  """{(tag, step): value} from the event files in ``logdir``, read with tensorboardX's protobufs
  (TFRecord framing: length, its crc, the event, its crc); later events replace earlier ones."""
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out[(v.tag, event.step)] = v.simple_value
  return out


def test_metrics_are_also_tensorboard_events(runs):
  """Every numeric value of metrics.jsonl is a TensorBoard scalar at its step (float32), in event
  files written without TensorFlow; the resumed run's file agrees with the uninterrupted one's."""
  for w in runs[:2]:
    lines = [json.loads(l) for l in open(os.path.join(w, run_files.METRICS_FILE))]
    want = {(k, d["step"]): v for d in lines for k, v in d.items()
            if k not in ("step", "time") and isinstance(v, (int, float))}
    got = _tensorboard_scalars(os.path.join(w, run_files.TENSORBOARD_DIR))
    assert any(k == "train/loss" for k, _ in want)
    for key, v in want.items():
      if key[0] not in ("steps_per_sec", "tokens_per_sec"):
        np.testing.assert_allclose(got[key], v, rtol=1e-6, err_msg=str(key))


def test_block_packed_run_trains_on_blocks_and_samples_whole_texts(tmp_path, tfds_dir,
                                                                    monkeypatch):
  """``data.pack_blocks``: training reads PAD-free blocks, and sampling returns the complete texts
  inside sampled blocks, as many as asked for."""
  from diffusion_text.data import packing
  require_synthetic_e2e()
  c = tiny.get_config()
  c.unlock()
  c.data.pack_blocks = True
  w = str(tmp_path / "blocks")
  train.train_and_evaluate(c, w)
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any(np.isfinite(d.get("eval/loss", np.nan)) for d in lines)
  run = generate.load_run(w)
  sources = pipeline.prepare_sources(c.data)
  examples = pipeline.model_examples(sources["train"], run.tokenizer, c.data, 256)
  encode = pipeline.make_encoder(run.tokenizer, c.data)
  rows = [encode(examples[i]) for i in range(len(examples))]
  assert 0 < len(rows) < 256 and not any(r["pad_mask"].any() for r in rows)
  texts = ["the eagle is a pub .", "there is a cheap place ."]
  blocks = packing.pack_blocks([run.tokenizer.encode(t) for t in texts * 3], c.data.max_len)
  calls = []
  monkeypatch.setattr(run, "generate_ids",
                      lambda n, seed=0, **kw: calls.append(seed) or blocks[:n])
  want = [run.tokenizer.decode(run.tokenizer.encode(t)) for t in texts]
  out = run.generate(3, steps=4)
  assert len(out) == 3 and set(out) <= set(want) and calls[0] == 0


def test_decode_bench_measures_each_row_with_its_texts(s2s_run, tmp_path, tfds_dir):
  """experiments.decode_bench: one row per setting (AR greedy and beam, two diffusion rows with
  --quick), each with the BLEU of exactly the texts written beside it and positive speeds; a
  teacher that is not an AR run is one error line."""
  from diffusion_text import decode_bench
  ar = str(tmp_path / "ar")
  train.train_and_evaluate(tiny.get_config("ar"), ar)
  out = tmp_path / "bench"
  r = _cli("experiments.decode_bench", "--student", s2s_run, "--teacher", ar, "--num_inputs", "3",
           "--batch_size", "2", "--quick", "--out", str(out))
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.load(open(out / "decode_bench.json"))
  got = [(x["family"], x["sampler"], x["steps"], x["clamp"], x["dials"]) for x in res["rows"]]
  assert got == [("ar", "greedy", None, None, {}), ("ar", "beam", 4, None, {}),
                 ("diffusion", "dpm++2m", 1, False, {"rounding": "nearest"}),
                 ("diffusion", "dpm++2m", 2, True, {})]
  for row in res["rows"]:
    texts = [json.loads(l) for l in open(out / row["texts"])]
    assert len(texts) == row["num_inputs"] == 3
    assert row["bleu"] == metrics.bleu([t["hyp"] for t in texts], [t["refs"] for t in texts])["bleu"]
    assert row["sentences_per_s"] > 0 and row["latency_s"] > 0 and row["peak_rss_bytes"] > 0
    assert len(row["decode_s_each"]) == 3 and row["decode_s"] == sorted(row["decode_s_each"])[1]
    assert row["settings"]["sampler"] == row["sampler"]
    assert row["settings"].get("rounding", "model") == row["dials"].get("rounding", "model")
  assert "| ar | greedy | - | - | - |" in decode_bench.table(res["rows"])
  assert os.path.isfile(out / "diffusion_dpm++2m1_rounding-nearest.jsonl")
  r = _cli("experiments.decode_bench", "--student", s2s_run, "--teacher", ar, "--num_inputs", "2",
           "--batch_size", "2", "--rows", "ar_greedy,diffusion_ddim1", "--out", str(tmp_path / "two"))
  assert r.returncode == 0, r.stderr[-2000:]
  two = json.load(open(tmp_path / "two" / "decode_bench.json"))["rows"]
  assert [(x["family"], x["sampler"], x["steps"]) for x in two] == [("ar", "greedy", None),
                                                                     ("diffusion", "ddim", 1)]
  r = _cli("experiments.decode_bench", "--student", s2s_run, "--rows", "diffusion_ddim3",
           "--out", str(tmp_path / "none"))
  assert r.returncode != 0 and "--rows: no row named diffusion_ddim3" in r.stderr.splitlines()[-1]
  bad = _cli("experiments.decode_bench", "--student", s2s_run, "--teacher", s2s_run,
             "--out", str(tmp_path / "bad"))
  assert bad.returncode != 0 and "a seq2seq ar run is needed" in bad.stderr.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "bad")
