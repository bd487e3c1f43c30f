"""Progressive distillation (``step_distill``): the DDIM inverse its targets rest on, the fixed
point (a student that equals its teacher's two steps samples as the teacher does in half the
steps), a student that learns that map, and the run it writes (config, frozen embeddings, grid)."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import tiny
from conftest import ROOT, require_synthetic_e2e
from diffusion_text import denoiser, generate, process, samplers, step_distill, train

DIFF = process.Diffusion("sqrt", 100)


@pytest.mark.parametrize("t,s", [(100, 60), (40, 3), (7, 0)])
def test_ddim_x0_for_inverts_the_ddim_step(t, s):
  ab = DIFF.alpha_bar
  x_t, x_s = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 3, 4))
  x0 = step_distill.ddim_x0_for(x_t, x_s, ab[t], ab[s])
  np.testing.assert_allclose(samplers.ddim_step(None, x_t, x0, ab[t], ab[s]), x_s, atol=2e-5)


def _toy_teacher(z, t_B, x_sc):
  """A smooth nonlinear x0 estimate that ignores self-conditioning (so a chain's estimates carry
  nothing the fixed-point student lacks)."""
  del x_sc
  scale = 1.0 + t_B[:, None, None] / 50.0
  return jnp.tanh(z * scale) + 0.1 * jnp.roll(z, 1, axis=-1)


def test_student_at_the_fixed_point_samples_as_its_teacher_in_half_the_steps():
  """A student whose estimate at each of its grid points is the x0 of its teacher's two DDIM steps
  (what the loss regresses onto) gives the teacher's 2K-step DDIM sample with K steps, also with
  held (source) positions; the teacher's own K-step sample differs."""
  grid2k = process.timestep_grid(100, 8, 1.5)
  grid = step_distill.student_grid(grid2k)
  g2 = jnp.asarray(grid2k)
  ab = DIFF.alpha_bar
  x_cond = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 4))
  mask = jnp.array([[0, 0, 1, 1, 1, 1]] * 2)

  def student(z, t_B, x_sc):  # traced inside the sampler's scan: t is found on the grid
    k = jnp.argmax(g2 == t_B[0])
    m_B, s_B = jnp.full_like(t_B, g2[k + 1]), jnp.full_like(t_B, g2[k + 2])
    z_s = step_distill.two_steps(_toy_teacher, ab, z, x_sc, t_B, m_B, s_B, x_cond, mask)
    return step_distill.ddim_x0_for(z, z_s, ab[t_B[0]], ab[s_B[0]])

  x_init = jax.random.normal(jax.random.PRNGKey(3), x_cond.shape)
  kw = dict(shape=x_cond.shape, sampler="ddim", x_cond_BxLxE=x_cond, mask_BxL=mask,
            x_init_BxLxE=x_init)
  rng = jax.random.PRNGKey(4)
  emb = jnp.zeros((3, 4))
  teacher_2k = samplers.sample(_toy_teacher, emb, DIFF, rng, grid=grid2k, **kw)
  student_k = samplers.sample(student, emb, DIFF, rng, grid=grid, **kw)
  np.testing.assert_allclose(student_k, teacher_2k, atol=1e-4)
  teacher_k = samplers.sample(_toy_teacher, emb, DIFF, rng, grid=grid, **kw)
  assert np.abs(teacher_k - teacher_2k).max() > 0.05
  np.testing.assert_array_equal(student_k[:, :2], x_cond[:, :2])


CFG = denoiser.ModelConfig(vocab_size=12, max_len=6, emb_dim=4, width=16, num_layers=1,
                           num_heads=2, mlp_dim=32, dropout=0.0, self_cond=True)


def _config():
  return ml_collections.ConfigDict({
      "model": {"x0_head": "linear", "logits_head": "tied", "emb_norm": "none", "emb_scale": 1.0},
      "diffusion": {"schedule": "sqrt", "num_steps": 100}})


def test_a_student_learns_its_teachers_two_steps():
  """Trained on the loss from its teacher's parameters (self-conditioned, two positions held as a
  source), a tiny student's held-out distillation loss falls, and its K-step DDIM samples move
  toward the teacher's 2K-step samples (from the same noise) and away from the teacher's own K-step
  samples."""
  model = denoiser.DiffusionLM(CFG)
  params = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(0)))
  grid2k = process.timestep_grid(100, 4)
  teacher = step_distill.Teacher(model=model, params=params, grid=grid2k, logit_temp=1.0)
  config = _config()
  ids = jax.random.randint(jax.random.PRNGKey(1), (64, 6), 0, 12)
  mask = jnp.array([[0, 0, 1, 1, 1, 1]] * 64)
  batch = {"ids": ids, "target_mask": mask}

  def loss(p, rng):
    terms = step_distill.loss_terms(model, p, batch, rng, config, True, teacher)
    return jnp.mean(terms["loss"])

  tx = optax.adam(3e-3)
  student, opt = params, tx.init(params)
  step = jax.jit(lambda p, o, r: _update(tx, jax.grad(loss)(p, r), p, o))
  held = lambda p: float(np.mean([loss(p, jax.random.PRNGKey(1000 + i)) for i in range(4)]))
  before = held(student)
  for i in range(150):
    student, opt = step(student, opt, jax.random.PRNGKey(i))
  assert held(student) < 0.5 * before
  np.testing.assert_array_equal(student["embedding"], params["embedding"])  # frozen

  def ddim(p, grid):
    f = lambda z, t, x_sc: model.apply({"params": p}, z, t, x_sc)
    return samplers.sample(f, p["embedding"], DIFF, jax.random.PRNGKey(9), shape=(64, 6, 4),
                           grid=grid, sampler="ddim", mask_BxL=mask,
                           x_cond_BxLxE=params["embedding"][ids])
  want = ddim(params, grid2k)
  gap = lambda x: float(jnp.mean((x - want) ** 2))
  grid = step_distill.student_grid(grid2k)
  assert gap(ddim(student, grid)) < 0.75 * gap(ddim(params, grid))  # 0.63 when written


def test_a_distilled_grid_reaches_the_decoder_and_is_checked():
  """``sample.grid`` is the grid ``dial_kwargs`` hands the decoder (with the rounding); another
  step count, a grid power beside it, or eval steps that disagree are refused."""
  from configs import common
  from diffusion_text import configuration, decoding
  from diffusion_text.errors import ConfigError
  c = common.get_config()
  c.sample.update(grid=[2000, 1500, 500, 0], steps=3, rounding="nearest")
  c.eval.sample_steps = 3
  configuration.validate(c, common.get_config())
  kw = decoding.dial_kwargs(c.sample, process.Diffusion("sqrt", 2000), 3)
  assert list(kw["grid"]) == [2000, 1500, 500, 0] and kw["rounding"] == "nearest"
  with pytest.raises(ValueError, match="distilled grid of 3 steps .*got steps=5"):
    decoding.dial_kwargs(c.sample, process.Diffusion("sqrt", 2000), 5)
  for key, value, msg in (("sample.grid_power", 2.0, "leave sample.grid_power at 1"),
                          ("eval.sample_steps", 8, "eval.sample_steps must say so"),
                          ("sample.grid", [2000, 500, 700, 0], "strictly decreasing")):
    bad = common.get_config()
    bad.sample.update(grid=[2000, 1500, 500, 0], steps=3)
    bad.eval.sample_steps = 3
    section, name = key.split(".")
    bad[section][name] = value
    with pytest.raises(ConfigError, match=msg):
      configuration.validate(bad, common.get_config())


def test_teacher_grid_halves_a_students_grid_or_says_why_not():
  own = ml_collections.ConfigDict({"grid": [100, 60, 30, 0], "grid_power": 1.0})
  from diffusion_text.errors import ConfigError
  with pytest.raises(ConfigError, match="distilled grid of 3 steps, which cannot be halved"):
    step_distill.teacher_grid(own, 100, 1)
  own.grid = [100, 80, 60, 30, 0]
  np.testing.assert_array_equal(step_distill.student_grid(step_distill.teacher_grid(own, 100, 2)),
                                [100, 60, 0])
  with pytest.raises(ConfigError, match="its student takes 2, not 1"):
    step_distill.teacher_grid(own, 100, 1)
  plain = ml_collections.ConfigDict({"grid_power": 1.5})
  np.testing.assert_array_equal(step_distill.teacher_grid(plain, 100, 3),
                                process.timestep_grid(100, 6, 1.5))


def _update(tx, grads, params, opt):
  updates, opt = tx.update(grads, opt, params)
  return optax.apply_updates(params, updates), opt


def _cli(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)


def test_step_distill_run_halves_the_grid_and_keeps_the_teachers_table(tmp_path, tfds_dir):
  """configs/step_distill.py:TEACHER,K trains a student that starts from the teacher and keeps its
  embedding table, records every other point of the teacher's 2K grid, evaluates on that grid
  (other step counts are one error line), and becomes the next round's teacher without K."""
  require_synthetic_e2e()
  teacher = str(tmp_path / "teacher")
  train.train_and_evaluate(tiny.get_config(), teacher)
  short = ["--config.train.num_train_steps=4", "--config.train.eval_every_steps=4",
           "--config.train.checkpoint_every_steps=2", "--config.eval.num_samples=0"]
  s4 = str(tmp_path / "s4")
  r = _cli("experiments.train", "--config", f"configs/step_distill.py:{teacher},4", "--workdir",
           s4, *short)
  assert r.returncode == 0, r.stderr[-2000:]
  config = json.load(open(os.path.join(s4, "config.json")))
  assert config["sample"]["grid"] == [100, 75, 50, 25, 0] and config["sample"]["steps"] == 4
  t_run, s_run = generate.load_run(teacher), generate.load_run(s4)
  # frozen (the EMA of a constant rounds in the last place)
  np.testing.assert_allclose(s_run.params["embedding"], t_run.params["embedding"], rtol=1e-6)
  assert not np.array_equal(s_run.params["denoiser"]["in_proj"]["kernel"],
                            t_run.params["denoiser"]["in_proj"]["kernel"])
  assert len(s_run.generate(3)) == 3
  r = _cli("experiments.evaluate", "--workdir", s4, "--num_inputs", "2", "--steps", "8")
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1] == ("error: this run samples on its distilled grid of "
                                                "4 steps (sample.grid); got steps=8")
  s2 = str(tmp_path / "s2")
  r = _cli("experiments.train", "--config", f"configs/step_distill.py:{s4}", "--workdir", s2,
           *short)
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(os.path.join(s2, "config.json")))["sample"]["grid"] == [100, 50, 0]
  # a student samples without its teachers (they are for its training loss only)
  os.rename(teacher, teacher + "_moved")
  os.rename(s4, s4 + "_moved")
  assert len(generate.load_run(s2).generate(2)) == 2
