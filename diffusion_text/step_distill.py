"""Progressive distillation (Salimans and Ho 2022): a student that takes in one DDIM step what its
teacher takes in two.

The teacher is a trained diffusion run, or an earlier student, sampling with deterministic DDIM
(eta 0) on a grid of 2K steps; the student starts from the teacher's parameters and samples on every
other point of that grid (K steps, ``student_grid``). For a training example, draw one student
interval (t, s) and the teacher's point m between them, noise the clean embeddings to z_t, take the
teacher's two steps t -> m -> s, and regress the student's estimate at (z_t, t) onto the x0 whose one
DDIM step t -> s lands where the teacher did (``ddim_x0_for``)::

    x0* = (z_s - c z_t) / (sqrt(ab_s) - c sqrt(ab_t)),   c = sqrt(1 - ab_s) / sqrt(1 - ab_t)

weighted by max(SNR_t, 1) (the paper's truncated SNR weighting). At the fixed point the student's
K-step sampler is its teacher's 2K-step sampler. Rounds chain: a student becomes the next round's
teacher and halves K again.

The embedding table is frozen (the teacher's space is the student's), the teacher reads its run's
logit temperature and the student its own head at temperature 1 (the temperature is in its targets).
Self-conditioning: the first teacher call and the student read the teacher's estimate from no
self-conditioning input (in a sampler chain they read the previous step's); the second teacher call
reads the first's, as in the chain. Positions outside the target mask (a seq2seq source) are held
clean throughout, as in the samplers.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import decoding, denoiser, embeddings, process, samplers
from diffusion_text.errors import ConfigError


def ddim_x0_for(x_t, x_s, ab_t, ab_s):
  """The x0 estimate whose deterministic DDIM step from ``x_t`` (at ab_t) lands on ``x_s`` (at ab_s):
  the inverse of ``samplers.ddim_step(eta=0)`` in its x0 argument (at ab_s = 1, x_s itself)."""
  c = jnp.sqrt(1.0 - ab_s) / jnp.sqrt(1.0 - ab_t)
  return (x_s - c * x_t) / (jnp.sqrt(ab_s) - c * jnp.sqrt(ab_t))


def teacher_grid(sample_config, num_train_steps: int, student_steps: int) -> np.ndarray:
  """The teacher's 2K-step grid: its own distilled grid when it is a student, else its evenly
  spaced (or ``grid_power``) grid of 2K steps."""
  own = list(sample_config.get("grid", []))
  if own:
    n = len(own) - 1
    if n % 2:
      raise ConfigError(f"the teacher samples on its distilled grid of {n} steps, which cannot be "
                        "halved")
    if n != 2 * student_steps:
      raise ConfigError(f"the teacher samples on its distilled grid of {n} steps; its student "
                        f"takes {n // 2}, not {student_steps}")
    return np.asarray(own, np.int32)
  power = float(sample_config.get("grid_power", 1.0))
  return process.timestep_grid(num_train_steps, 2 * student_steps, power)


def student_grid(grid_2k) -> np.ndarray:
  """Every other point of the teacher's grid: the student's K-step grid."""
  return np.asarray(grid_2k)[::2]


@dataclasses.dataclass(frozen=True)
class Teacher:
  """What the student's loss reads from the teacher run (``families`` setup)."""
  model: Any
  params: Any
  grid: np.ndarray  # the teacher's 2K-step grid (2K + 1 decreasing timesteps)
  logit_temp: float

  @property
  def init_params(self):
    """The student's starting parameters."""
    return self.params


def two_steps(denoise_fn: Callable, ab_T, z_t, x_sc, t_B, m_B, s_B, x_cond, mask):
  """The teacher's DDIM steps t -> m -> s from ``z_t`` (self-conditioning input ``x_sc``), positions
  outside ``mask`` held at ``x_cond`` as in ``samplers.sample``; ``ab_T`` the alpha_bar table.
  Returns z_s."""
  hold = lambda x: process.apply_mask(x, x_cond, mask)
  ab = lambda t_B: ab_T[t_B][:, None, None]
  x0_t = hold(denoise_fn(z_t, t_B, x_sc))
  z_m = hold(samplers.ddim_step(None, z_t, x0_t, ab(t_B), ab(m_B)))
  x0_m = hold(denoise_fn(z_m, m_B, x0_t))
  return hold(samplers.ddim_step(None, z_m, x0_m, ab(m_B), ab(s_B)))


def loss_terms(model, params, batch, rng, config, deterministic, teacher: Teacher) -> dict:
  """Per-example terms of the distillation loss (``families`` calls it for a run with
  ``step_distill.teacher_run``): ``loss`` the SNR-weighted squared error of the student's x0 over
  the target positions, ``mse`` the unweighted one, ``weight`` 1."""
  rng_k, rng_eps, rng_drop = jax.random.split(rng, 3)
  diffusion = process.Diffusion(config.diffusion.schedule, config.diffusion.num_steps)
  ab = diffusion.alpha_bar
  emb = jax.lax.stop_gradient(embeddings.table(params, config.model))
  ids, mask = batch["ids"], batch["target_mask"]
  B = ids.shape[0]
  grid = jnp.asarray(teacher.grid)
  k_B = jax.random.randint(rng_k, (B,), 0, (len(teacher.grid) - 1) // 2)
  t_B, m_B, s_B = grid[2 * k_B], grid[2 * k_B + 1], grid[2 * k_B + 2]
  x0 = embeddings.embed(emb, ids)
  z_t = process.q_sample(x0, ab[t_B], jax.random.normal(rng_eps, x0.shape), mask)
  src_len = model.cfg.src_len
  memory = ({"memory": denoiser.encode_source(teacher.model.cfg, teacher.params, x0[:, :src_len])}
            if src_len else {})  # the encoder-decoder's clean source, encoded once
  teach = decoding.denoiser_of(teacher.model, teacher.params, logit_temp=teacher.logit_temp,
                               emb_VxE=emb, **memory)
  x_sc = jnp.zeros_like(z_t)
  if model.cfg.self_cond:  # zeros at the chain's first step (t = T), as the samplers give
    first = (k_B == 0)[:, None, None]
    x_sc = jnp.where(first, 0.0, process.apply_mask(teach(z_t, t_B, x_sc), x0, mask))
  z_s = two_steps(teach, ab, z_t, x_sc, t_B, m_B, s_B, x0, mask)
  target = jax.lax.stop_gradient(ddim_x0_for(z_t, z_s, ab[t_B][:, None, None],
                                             ab[s_B][:, None, None]))
  student = {**params, "embedding": jax.lax.stop_gradient(params["embedding"])}
  x0_hat = model.apply({"params": student}, z_t, t_B, x_sc, deterministic=deterministic,
                       rngs={"dropout": rng_drop})
  keep = (mask > 0).astype(jnp.float32)
  err_B = jnp.sum(jnp.mean((x0_hat - target) ** 2, -1) * keep, -1) / jnp.maximum(
      jnp.sum(keep, -1), 1.0)
  snr_B = ab[t_B] / (1.0 - ab[t_B])
  return {"loss": jnp.maximum(snr_B, 1.0) * err_B, "mse": err_B, "weight": jnp.ones((B,))}


def setup(config, load_run) -> Teacher:
  """The frozen teacher of a ``step_distill`` config, loaded once with ``load_run(workdir)``, after
  checking that the student is the same model on the same data layout."""
  sd = config.step_distill
  run = load_run(sd.teacher_run, scan_layers=config.model.scan_layers)
  if run.config.model.family != "diffusion":
    raise ConfigError(f"step_distill.teacher_run {sd.teacher_run} is a "
                      f"{run.config.model.family} run, not a diffusion LM")
  want, got = run.config.model.to_dict(), config.model.to_dict()
  diff = [f"model.{k}" for k in sorted(set(want) | set(got))
          if want.get(k) != got.get(k) and k not in ("dropout", "scan_layers")]
  for section, key in (("diffusion", "schedule"), ("diffusion", "num_steps"), ("data", "max_len"),
                       ("data", "task")):
    if run.config[section][key] != config[section][key]:
      diff.append(f"{section}.{key}")
  if diff:
    raise ConfigError(f"the student must be its teacher's model ({sd.teacher_run}); differs in "
                      f"{', '.join(diff)}")
  if float(run.config.sample.get("score_temp", 1.0)) != 1.0:
    raise ConfigError(f"the teacher {sd.teacher_run} samples at a score temperature; distillation "
                      "follows its plain DDIM steps (set its sample.score_temp to 1)")
  grid = teacher_grid(run.config.sample, run.diffusion.num_steps, sd.steps)
  if list(config.sample.grid) != [int(t) for t in student_grid(grid)]:
    raise ConfigError(f"sample.grid must be every other point of the teacher's grid "
                      f"{[int(t) for t in grid]} (configs/step_distill.py writes it)")
  return Teacher(model=run.model, params=run.params, grid=grid,
                 logit_temp=float(run.config.sample.get("logit_temp", 1.0)))
