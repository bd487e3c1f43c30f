"""Controllable generation: guidance math, constraints, infilling/length layouts, CFG, classifiers."""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion_text import control, denoiser, losses, process, samplers
from diffusion_text.data import tokenizers

DIFF = process.Diffusion("sqrt", 100)
V, L, E = 12, 8, 4
EMB = jax.random.normal(jax.random.PRNGKey(3), (V, E))
SAMPLERS = ["ddpm", "ddim", "dpm++2m"]


def shrink(z, t, x_sc):
  """A fixed, non-trivial denoiser (no parameters): the trajectory depends on every step."""
  del x_sc
  return 0.7 * jnp.tanh(z) + 0.01 * t[:, None, None]


def attract(target_E, weight=1.0):
  """A constructed 'classifier' whose log-probability rises towards one embedding."""
  return control.Term(lambda x, t, a: -jnp.sum((x - target_E) ** 2, axis=(1, 2)), weight)


def _run(guidance, sampler, mask=None, x_cond=None, args=(None,)):
  guide = control.make_guide_fn(guidance, DIFF, args) if guidance else None
  f = functools.partial(samplers.sample, shrink, EMB, DIFF, shape=(3, L, E), steps=20,
                        sampler=sampler, mask_BxL=mask, x_cond_BxLxE=x_cond, guide_fn=guide)
  return jax.jit(f)(jax.random.PRNGKey(0))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_zero_weight_term_equals_unguided(sampler):
  g = control.Guidance(terms=(attract(EMB[5], weight=0.0),), num_steps=3, step_size=0.5)
  # equal up to float rounding: the two are different XLA programs, and on some CPUs (an Intel Xeon
  # here) their fusions round the DDPM posterior differently, by one ulp
  np.testing.assert_allclose(np.asarray(_run(g, sampler)), np.asarray(_run(None, sampler)),
                             rtol=0, atol=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_classifier_gradient_moves_samples_to_its_embedding(sampler):
  target = 5
  unguided = np.asarray(samplers.embeddings.round_to_ids(EMB, _run(None, sampler)))
  g = control.Guidance(terms=(attract(EMB[target], weight=10.0),), num_steps=3, step_size=0.5)
  guided = np.asarray(samplers.embeddings.round_to_ids(EMB, _run(g, sampler)))
  assert np.mean(unguided == target) < 0.5
  assert np.all(guided == target)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guidance_never_moves_masked_positions(sampler):
  x_cond = jnp.broadcast_to(EMB[jnp.arange(L) % V], (3, L, E))
  mask = jnp.asarray(np.tile((np.arange(L) >= 3).astype(np.int32), (3, 1)))
  g = control.Guidance(terms=(attract(EMB[5], weight=10.0),), num_steps=3, step_size=0.5)
  out = np.asarray(_run(g, sampler, mask=mask, x_cond=x_cond))
  np.testing.assert_array_equal(out[:, :3], np.asarray(x_cond)[:, :3])
  assert not np.allclose(out[:, 3:], np.asarray(x_cond)[:, 3:])


def test_composition_gradient_is_weighted_sum_of_gradients():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, L, E))
  t = jnp.array([10, 50])
  a, b = attract(EMB[1], 0.3), control.avoid_tokens_term(EMB, DIFF, [0, 3], weight=2.0)
  args = (None, jnp.ones((2, L)))
  grad = lambda terms, args: jax.grad(lambda x: jnp.sum(control.score(terms, x, t, args)))(x)
  both = grad((a, b), args)
  np.testing.assert_allclose(both, grad((a,), args[:1]) + grad((b,), args[1:]), rtol=1e-5,
                             atol=1e-6)


def test_classifier_term_sums_each_rows_labels():
  lp = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]))
  term = control.classifier_term(lambda x, t: lp)
  labels = jnp.array([[2, 0], [1, -1]])  # row 1 has one target
  np.testing.assert_allclose(term.fn(None, None, labels),
                             [np.log(0.7) + np.log(0.1), np.log(0.25)], rtol=1e-6)


def test_avoid_tokens_term_lowers_their_probability():
  g = control.Guidance(terms=(control.avoid_tokens_term(EMB, DIFF, [0, 3]),), num_steps=5,
                       step_size=0.3)
  x = jnp.broadcast_to(EMB[0], (2, L, E)) + 0.01  # sitting on token 0
  mask = jnp.ones((2, L))
  moved = control.make_guide_fn(g, DIFF, (mask,))(x, 2, 1)
  p = lambda x: jnp.sum(jax.nn.softmax(samplers.embeddings.rounding_logits(EMB, x))[..., [0, 3]])
  assert float(p(moved)) < float(p(x))


def test_presence_term_is_the_probability_some_position_says_a_group_word():
  """sum over groups of log(1 - prod_l (1 - sum_{w in g} p_l(w))) over the mask's positions; a
  padded group adds nothing."""
  p = jnp.array([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]]])  # (1, 3 positions, 3 words)
  groups = jnp.array([[[1, -1], [0, 2], [-1, -1]]])  # {1}, {0, 2}, none
  mask = jnp.array([[1, 1, 0]])  # the third position is the source's
  term = control.presence_term()
  got = term.fn(None, None, (groups, mask), lambda x, t: jnp.log(p))
  want = np.log(1 - (1 - 0.3) * (1 - 0.1)) + np.log(1 - (1 - 0.7) * (1 - 0.9))
  np.testing.assert_allclose(got, [want], rtol=1e-5)
  assert term.reads_model
  with pytest.raises(ValueError, match="reads the model's word logits"):
    control.score((term,), jnp.zeros((1, 3, 2)), jnp.zeros((1,), jnp.int32), ((groups, mask),))


def test_presence_guidance_raises_a_missing_words_probability():
  """Guided by the model's own logits (here: the rounding logits of x), the ascent moves x so that
  a word no position says becomes likelier."""
  logits_fn = lambda x, t: samplers.embeddings.rounding_logits(EMB, x)
  g = control.Guidance(terms=(control.presence_term(),), num_steps=5, step_size=0.3)
  x = jnp.broadcast_to(EMB[0], (2, L, E)) + 0.01  # every position says word 0
  args = (jnp.full((2, 1, 1), 5), jnp.ones((2, L)))
  moved = control.make_guide_fn(g, DIFF, (args,), logits_fn)(x, 2, 1)
  value = lambda z: control.presence_term().fn(z, None, args, logits_fn)
  assert np.all(np.asarray(value(moved)) > np.asarray(value(x)))


def test_slot_groups_are_each_fields_anchor_words_padded():
  tok = tokenizers.WordTokenizer(["<name>", "pub", "cheap", "low", "river", "riverside", "the"])
  groups = control.slot_groups(tok, ["name : <name> | Type : pub | price : cheap",
                                     "name : <name> | area : riverside | family friendly : yes"])
  ids = lambda *ws: sorted(tok.encode(" ".join(ws)))
  assert groups.shape == (2, 3, 2) and groups.dtype == np.int32  # 3 fields, 2 words at most
  assert sorted(groups[0, 0][groups[0, 0] >= 0]) == ids("<name>")
  assert sorted(groups[0, 2][groups[0, 2] >= 0]) == ids("cheap", "low")  # "inexpensive", "less": not words
  assert sorted(groups[1, 1][groups[1, 1] >= 0]) == ids("riverside", "river")
  assert np.all(groups[1, 2] == -1)  # family friendly: yes has no anchor in this vocabulary


def test_cfg_scale_one_is_conditional_and_zero_is_null():
  ids = jnp.array([[2, 10, 11, 4, 0, 0, 0, 0]])
  mask = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1]])

  def denoise(z, t, x_sc):  # depends on the source through the mean of the clean positions
    return z + jnp.mean(z[:, :4], axis=(1, 2))[:, None, None]

  x_cond = samplers.embeddings.embed(EMB, ids)
  z = process.apply_mask(jax.random.normal(jax.random.PRNGKey(0), x_cond.shape), x_cond, mask)
  t, sc = jnp.array([5]), jnp.zeros_like(z)
  cond = denoise(z, t, sc)
  x_null = samplers.embeddings.embed(EMB, losses.null_source(ids, mask))
  null = denoise(process.apply_mask(z, x_null, mask), t, sc)
  f = lambda s: control.cfg_denoiser(denoise, EMB, ids, mask, s)(z, t, sc)
  np.testing.assert_allclose(f(1.0), cond, rtol=1e-6)
  np.testing.assert_allclose(f(0.0), null, rtol=1e-6)
  np.testing.assert_allclose(f(3.0), null + 3.0 * (cond - null), rtol=1e-5, atol=1e-6)
  assert not np.allclose(cond, null)


def test_null_source_keeps_bos_sep_and_target():
  ids = np.array([[2, 10, 11, 4, 20, 21, 3, 0]])
  mask = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
  np.testing.assert_array_equal(losses.null_source(ids, mask), [[2, 0, 0, 4, 20, 21, 3, 0]])


def _tok():
  return tokenizers.WordTokenizer(["the", "pub", "is", "near", "river", "cheap"])


def test_infill_and_length_layouts():
  tok = _tok()
  ids, mask = control.infill_inputs(tok, "the pub", "near the river", span=3, max_len=16)
  assert tok.decode(ids[:3].tolist() + [tokenizers.EOS]) == "the pub"
  assert mask.tolist() == [0, 0, 0, 1, 1, 1] + [0] * 10
  assert ids[6:10].tolist() == tok.encode("near the river") + [tokenizers.EOS]
  filled = ids.copy()
  filled[3:6] = [tok.encode("is")[0], tokenizers.PAD, tok.encode("cheap")[0]]
  assert control.infill_text(tok, filled, mask) == "is cheap"
  ids, mask = control.length_inputs(4, 10)
  assert ids.tolist() == [2, 0, 0, 0, 0, 3, 0, 0, 0, 0] and mask.sum() == 4
  with pytest.raises(ValueError, match="length must be"):
    control.length_inputs(9, 10)


def test_guided_decoder_keeps_infilling_context_tokens():
  cfg = denoiser.ModelConfig(vocab_size=V, max_len=L, emb_dim=E, width=16, num_layers=1,
                             num_heads=2, mlp_dim=32)
  model = denoiser.DiffusionLM(cfg)
  params = jax.tree_util.tree_map(lambda x: x, denoiser.init_params(cfg, jax.random.PRNGKey(0)))
  from flax import linen as nn
  params = nn.meta.unbox(params)
  run = types.SimpleNamespace(
      config=types.SimpleNamespace(model=types.SimpleNamespace(family="diffusion", x0_head="linear",
                                                               logits_head="tied", emb_norm="none"),
                                   diffusion=types.SimpleNamespace(cond_drop_prob=0.0),
                                   sample={}),  # the sampling settings' defaults
      diffusion=DIFF, model=model, params=params, workdir="x")
  emb = params["embedding"]
  g = control.Guidance(terms=(attract(emb[7], weight=10.0),), num_steps=5, step_size=1.0)
  decode = control.make_decoder(run, guidance=g, sampler="ddim", steps=10)
  ids = np.tile(np.array([2, 5, 6, 0, 0, 0, 8, 3], np.int32), (4, 1))
  mask = np.tile(np.array([0, 0, 0, 1, 1, 1, 0, 0], np.int32), (4, 1))
  out = control.generate_ids(decode, ids, mask, (None,), batch_size=3)
  assert out.shape == ids.shape
  np.testing.assert_array_equal(out[:, mask[0] == 0], ids[:, mask[0] == 0])
  assert np.all(out[:, mask[0] == 1] == 7)  # the constructed classifier's token fills the span
  with pytest.raises(ValueError, match="condition dropout"):
    control.make_decoder(run, cfg_scale=2.0)


# ------------------------------------------------------------- end to end on tiny E2E runs (slow)

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tfds_dir):
  from configs import tiny
  from conftest import require_synthetic_e2e
  from diffusion_text import train
  require_synthetic_e2e()
  root = tmp_path_factory.mktemp("control")
  lm, clf, s2s = str(root / "lm"), str(root / "clf"), str(root / "cfg")
  train.train_and_evaluate(tiny.get_config(), lm)
  c = tiny.get_config("classifier")
  c.unlock()
  c.classifier.base_run = lm
  train.train_and_evaluate(c, clf)
  train.train_and_evaluate(tiny.get_config("cfg"), s2s)
  return lm, clf, s2s


@pytest.mark.slow
def test_classifier_trains_in_the_loop_and_reads_its_base_run(tiny_runs):
  import json
  import os
  from diffusion_text import classifier, generate
  lm, clf, _ = tiny_runs
  run = generate.load_run(clf)
  base = generate.load_run(lm)
  assert run.tokenizer.itos == base.tokenizer.itos  # the base run's vocabulary, not a new one
  losses_ = [json.loads(l)["train/loss"] for l in open(os.path.join(clf, "metrics.jsonl"))
             if '"train/loss"' in l]
  assert losses_[-1] < losses_[0]
  lp = classifier.log_prob_fn(run.model, run.params, run.config)(
      jnp.zeros((2, 32, 8)), jnp.array([0, 50]))
  assert lp.shape == (2, base.tokenizer.vocab_size) and np.all(np.asarray(lp) <= 0)


@pytest.mark.slow
def test_control_tasks_are_evaluators(tiny_runs):
  """The control tasks run from ``experiments.evaluate --evaluators``, each flag reaching the tasks
  that read it, and write ``<workdir>/eval/control_<task>.json``."""
  import json
  import os
  import subprocess
  import sys
  from conftest import ROOT
  lm, clf, s2s = tiny_runs
  common = ["--steps", "5", "--batch_size", "4", "--nll_t", "2"]
  jobs = [(lm, ["--evaluators", "semantic", "--classifier", clf, "--num_targets", "2",
                "--per_target", "2", "--split", "train"]),  # settings are chosen on train values
          (lm, ["--evaluators", "length", "--lengths", "5,9", "--per_target", "2"]),
          (lm, ["--evaluators", "infill", "--num_inputs", "3"]),
          (clf, ["--evaluators", "classifier_accuracy"]),
          (s2s, ["--evaluators", "cfg", "--scales", "0,2", "--num_inputs", "2", "--sampler",
                 "dpm++2m"])]
  for workdir, args in jobs:
    r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", workdir, *args,
                        *common], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
  read = lambda w, name: json.loads(open(os.path.join(w, "eval", name + ".json")).read())
  sem = read(lm, "control_semantic_train")
  assert len(sem["targets"]) == 2 and 0 <= sem["guided"]["success"] <= 1 and sem["split"] == "train"
  assert sem["guided"]["nll_bits_per_token"] > 0 and sem["nll_t"] == 2 and sem["steps"] == 5
  length = read(lm, "control_length")
  assert length["mask"]["success"] <= 1 and "mask+avoid_pad_eos" in length
  assert length["lengths"] == [5, 9] and length["guidance_steps"] == 3  # the task's own default
  infill = read(lm, "control_infill")
  assert infill["context_tokens_unchanged"] and infill["num_inputs"] == 3
  assert read(clf, "control_classifier_accuracy")["by_t"]
  cfg = read(s2s, "control_cfg")
  assert [r["scale"] for r in cfg["by_scale"]] == [0.0, 2.0]
  # the record names the run's task and data and every sampling setting, defaults included
  assert cfg["run_task"] == "seq2seq" and cfg["dataset"] and cfg["clamp"] is False
  assert {"eta", "collapse", "sampler", "steps", "logit_temp", "rounding"} <= set(cfg)
  for workdir, args, msg in ((lm, ["--evaluators", "cfg"], "needs a seq2seq run"),
                             (s2s, ["--evaluators", "length"], "needs an unconditional LM"),
                             (lm, ["--evaluators", "semantic"], "needs --classifier"),
                             (lm, ["--evaluators", "cfg", "--scales", "1,x"], "--scales")):
    r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", workdir, *args],
                       cwd=ROOT, capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and last.startswith("error:") and msg in last, r.stderr[-1000:]


@pytest.mark.slow
def test_slot_guidance_and_cfg_scale_are_sampling_settings(tiny_runs):
  """``sample.slot_guidance`` and ``sample.cfg_scale`` change what a seq2seq run writes (read by the
  nearest embedding: rounding by the model re-reads the source), never its source, and an
  evaluation names and records them."""
  import json
  import os
  import subprocess
  import sys
  from conftest import ROOT
  from diffusion_text import generate
  lm, _, s2s = tiny_runs
  run = generate.load_run(s2s)
  srcs = ["name : Aromi | Type : pub | area : riverside", "name : The Eagle | food : Thai",
          "name : Aromi | price : cheap | family friendly : yes"]
  ids, mask = run.pack_sources(srcs)
  with run.config.unlocked():
    run.config.sample.rounding = "nearest"
  plain = run.generate_ids(sources=srcs, sampler="dpm++2m", steps=5)
  for dial, value in (("slot_guidance", 3.0), ("cfg_scale", 0.0)):
    with run.config.unlocked():
      run.config.sample[dial] = value
    out = run.generate_ids(sources=srcs, sampler="dpm++2m", steps=5)
    np.testing.assert_array_equal(out[mask == 0], ids[mask == 0])
    assert np.any(out != plain), dial
    with run.config.unlocked():
      run.config.sample[dial] = 1.0 if dial == "cfg_scale" else 0.0
  r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", s2s,
                      "--num_inputs", "2", "--sampler", "dpm++2m", "--steps", "3",
                      "--rounding", "nearest", "--slot_guidance", "0.5", "--cfg_scale", "2"],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  step = run.step
  res = json.load(open(os.path.join(s2s, "eval", f"validation_step{step}_dpm++2m3_mbr1_n2_"
                                    "roundnearest_sg0.5_cfg2.json")))
  assert res["slot_guidance"] == 0.5 and res["cfg_scale"] == 2.0 and "slot_error_rate" in res
  r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", lm,
                      "--slot_guidance", "1"], cwd=ROOT, capture_output=True, text=True)
  last = r.stderr.strip().splitlines()[-1]
  assert r.returncode == 1 and last.startswith("error:") and "seq2seq run" in last


@pytest.mark.slow
def test_label_classifier_terms_and_clean_judge_mode(tiny_runs):
  """labels=label: a per-sentence softmax over classes; max_t=0 reads clean embeddings only, so
  (without dropout) the loss does not depend on the noise draw."""
  from flax import linen as nn
  from configs import tiny
  from diffusion_text import classifier, families, generate
  lm, _, _ = tiny_runs
  c = tiny.get_config("classifier")
  c.unlock()
  c.classifier.update(base_run=lm, labels="label", num_classes=2, max_t=0)
  base = generate.load_run(lm)
  model_cfg = families.model_config(c, base.tokenizer.vocab_size)
  model = classifier.NoisyClassifier(model_cfg)
  params = nn.meta.unbox(classifier.init_params(model_cfg, jax.random.PRNGKey(0)))
  ids = jnp.asarray(np.tile(np.array([2, 7, 8, 9, 3] + [0] * 27, np.int32), (4, 1)))
  batch = {"ids": ids, "target_mask": jnp.ones_like(ids), "label": jnp.array([0, 1, 0, 1])}
  base = classifier.setup(c, generate.load_run)
  a = classifier.loss_terms(model, params, batch, jax.random.PRNGKey(1), c, deterministic=True,
                            context=base)
  b = classifier.loss_terms(model, params, batch, jax.random.PRNGKey(2), c, deterministic=True,
                            context=base)
  assert a["loss"].shape == (4,)
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
  lp = classifier.log_prob_fn(model, params, c)(jnp.zeros((4, 32, 8)), jnp.zeros((4,), jnp.int32))
  assert lp.shape == (4, 2)
  np.testing.assert_allclose(jnp.exp(lp).sum(-1), 1.0, rtol=1e-5)
