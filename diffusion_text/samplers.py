"""Reverse-process samplers, each one jitted ``lax.scan`` over a decreasing timestep grid.

Every sampler step maps (x_t, x0_hat) to x_s for a grid pair s < t and uses the true ``alpha_bar`` of
both grid points, so any number of steps in [1, T] is a correct respacing:

* ``ddpm``: ancestral sampling from the posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 7).
* ``ddim``: Song et al. (2021) eq. 12 with noise scale ``eta``; eta = 1 is exactly the ddpm step
  (same mean and variance), eta = 0 is deterministic.
* ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022, alg. 2), the multistep second-order solver of the
  probability-flow ODE in data-prediction form. Its step is the deterministic DDIM step applied to
  the extrapolated estimate ``D = x0_hat + (x0_hat - x0_prev) / (2 r)``, ``r = h_prev / h`` the ratio
  of consecutive log-SNR step sizes; the first step (no history) and the last step (to alpha_bar = 1,
  where h is infinite) are first order ("lower order final"), which keeps it stable at 5-10 steps.

Before each step the denoiser's x0_hat passes through hooks: the clamping trick (nearest embedding,
Li et al. 2022 sec. 4.2) and re-anchoring of positions outside ``mask`` to their clean values (DiffuSeq
source tokens, infilling context). After each step (and the optional guidance hook, which moves x_s
uphill on control terms) those positions are re-imposed on x_s as well.

With ``commit``, positions are also fixed one group at a time, in the order of confidence of
mask-predict decoding (Ghazvininejad et al. 2019): after step k of K, the ``round(n k / K)`` most
confident of a row's n generated positions hold their nearest word embedding from then on, as
source words do, and the rest go on being denoised with them in view. Confidence is how close
x0_hat is to its nearest embedding. A model trained with ``diffusion.reveal_prob`` > 0 has seen
target words given clean beside noised ones; one trained without has not.

The hooked x0_hat is carried to the next step, where it is both the multistep history and the
self-conditioning input of the denoiser (Chen et al. 2022): ``denoise_fn(z_t, t, x_sc)`` receives
zeros on the first step and the previous estimate after that. Models without self-conditioning
ignore ``x_sc``. Memory does not grow with the number of steps.
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, process


def ddpm_step(rng, x_t, x0_hat, ab_t, ab_s, *, eta: float = 1.0, **_):
  del eta
  mean, var = process.posterior_mean_var(x0_hat, x_t, ab_t, ab_s)
  return mean + jnp.sqrt(var) * jax.random.normal(rng, x_t.shape)


def ddim_step(rng, x_t, x0_hat, ab_t, ab_s, *, eta: float = 0.0, **_):
  eps_hat = process.eps_from_x0(x_t, x0_hat, ab_t)
  var = eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)
  dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_s - var, 0.0))
  noise = jax.random.normal(rng, x_t.shape) if eta > 0 else 0.0
  return jnp.sqrt(ab_s) * x0_hat + dir_coef * eps_hat + jnp.sqrt(var) * noise


def log_snr(ab):
  """lambda = log(alpha / sigma) = 0.5 log(ab / (1 - ab)); finite for ab in (0, 1)."""
  return 0.5 * (jnp.log(ab) - jnp.log1p(-ab))


def dpmpp_2m_step(rng, x_t, x0_hat, ab_t, ab_s, *, x0_prev, ab_prev, has_prev, eta: float = 0.0):
  """One DPM-Solver++(2M) step t -> s; ``x0_prev`` was predicted at the previous grid point
  (``ab_prev``). Second order when there is history and s is not the clean end of the chain."""
  del eta
  second = jnp.logical_and(has_prev, ab_s < 1.0)
  safe = lambda ab: jnp.where(second, ab, 0.5)  # keep log-SNRs finite where they are not used
  h = log_snr(safe(ab_s)) - log_snr(safe(ab_t))
  h_prev = log_snr(safe(ab_t)) - log_snr(safe(jnp.where(has_prev, ab_prev, 0.25)))
  r = h_prev / jnp.where(second, h, 1.0)
  d = jnp.where(second, x0_hat + (x0_hat - x0_prev) / (2.0 * jnp.where(second, r, 1.0)), x0_hat)
  return ddim_step(rng, x_t, d, ab_t, ab_s, eta=0.0)


SAMPLERS: dict[str, Callable] = {"ddpm": ddpm_step, "ddim": ddim_step, "dpm++2m": dpmpp_2m_step}


def sample(denoise_fn: Callable, emb_VxE, diffusion: process.Diffusion, rng, *,
           shape: tuple[int, int, int], steps: Optional[int] = None, sampler: str = "ddpm",
           clamp: bool = False, eta: float = 0.0, x_cond_BxLxE=None, mask_BxL=None,
           grid=None, x_init_BxLxE=None, guide_fn: Optional[Callable] = None,
           commit: bool = False, score_temp: float = 1.0):
  """Draw x_0 from the reverse process; returns the final x_0 of shape ``shape`` = (B, L, E).

  Args:
    denoise_fn: ``(z_t_BxLxE, t_B, x_sc_BxLxE) -> x0_hat_BxLxE`` (e.g. the EMA denoiser,
      deterministic); ``x_sc`` is the self-conditioning input (zeros on the first step).
    emb_VxE: embedding table, for clamping.
    steps: number of sampler steps K (default T); the grid is ``process.timestep_grid(T, K)``.
    sampler: a key of ``SAMPLERS``. eta: ddim noise scale (ignored by the others).
    x_cond_BxLxE, mask_BxL: positions with mask 0 are held at ``x_cond`` throughout.
    grid, x_init_BxLxE: a custom decreasing timestep grid (overrides ``steps``) and the state at its
      first point (default N(0, I), which is right for a grid starting at T). The result is the state
      at the grid's last point, e.g. a partial trajectory for editing from a noised input.
    guide_fn: ``(x_s, t, s) -> x_s`` applied to every step's result before masked positions are
      re-imposed (classifier guidance, ``control.py``).
    commit: fix the generated positions a group per step, most confident first (module docstring);
      needs ``mask_BxL``.
    score_temp: the step reads the score divided by this (``temper_x0``); 1 is the plain sampler,
      below 1 sharpens each step toward the denoiser's estimate.
  """
  if not score_temp > 0:
    raise ValueError(f"score_temp must be > 0, got {score_temp}")
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
  step_fn = SAMPLERS[sampler]
  T = diffusion.num_steps
  if grid is None:
    grid = process.timestep_grid(T, steps or T)
  grid = np.asarray(grid)
  if grid.ndim != 1 or len(grid) < 2 or np.any(np.diff(grid) >= 0) or grid[0] > T or grid[-1] < 0:
    raise ValueError(f"grid must be strictly decreasing timesteps in [0, T={T}], got {grid}")
  ab_table = diffusion.alpha_bar
  B = shape[0]
  if mask_BxL is not None and x_cond_BxLxE is None:
    raise ValueError("mask_BxL needs x_cond_BxLxE (the clean values of masked-out positions)")
  if commit and mask_BxL is None:
    raise ValueError("commit needs mask_BxL (the positions to generate)")
  x_cond = x_cond_BxLxE if x_cond_BxLxE is not None else jnp.zeros(shape, jnp.float32)
  num_steps = len(grid) - 1

  rng_init, rng_steps = jax.random.split(rng)
  x_init = jax.random.normal(rng_init, shape) if x_init_BxLxE is None else x_init_BxLxE
  x_T = process.apply_mask(x_init, x_cond, mask_BxL)

  def body(carry, inputs):
    x_t, x0_prev, ab_prev, x_cond, mask = carry
    k, t, s, key, has_prev = inputs
    x0_hat = denoise_fn(x_t, jnp.full((B,), t, jnp.int32), x0_prev)
    if clamp:
      x0_hat = embeddings.clamp(emb_VxE, x0_hat)
    if commit:
      x_cond, mask = commit_most_confident(emb_VxE, x0_hat, x_cond, mask, mask_BxL,
                                           (k + 1) / num_steps)
    x0_hat = process.apply_mask(x0_hat, x_cond, mask)
    x0_step = x0_hat if score_temp == 1.0 else temper_x0(x_t, x0_hat, ab_table[t], score_temp)
    x_s = step_fn(key, x_t, x0_step, ab_table[t], ab_table[s], eta=eta, x0_prev=x0_prev,
                  ab_prev=ab_prev, has_prev=has_prev)
    if guide_fn is not None:
      x_s = guide_fn(x_s, t, s)
    return (process.apply_mask(x_s, x_cond, mask), x0_hat, ab_table[t], x_cond, mask), None

  ts = jnp.asarray(grid[:-1])
  ss = jnp.asarray(grid[1:])
  keys = jax.random.split(rng_steps, num_steps)
  has_prev = jnp.arange(num_steps) > 0
  init = (x_T, jnp.zeros(shape, x_T.dtype), jnp.zeros((), ab_table.dtype), x_cond, mask_BxL)
  (x_0, _, _, _, _), _ = jax.lax.scan(body, init, (jnp.arange(num_steps), ts, ss, keys, has_prev))
  return x_0


def temper_x0(x_t, x0_hat, ab_t, score_temp: float):
  """The x0 estimate whose implied score is the model's divided by ``score_temp``: the implied noise
  ``eps_hat`` scaled by 1 / score_temp, i.e. ``x0 = x_t / sqrt(ab) + (x0_hat - x_t / sqrt(ab)) /
  score_temp`` (the score of p^(1/score_temp) for a Gaussian-smoothed p; Plaid, Gulrajani and
  Hashimoto 2023, samples at 0.9). Only the sampler step reads it; hooks and the self-conditioning
  history keep the model's own estimate."""
  base = x_t / jnp.sqrt(ab_t)
  return base + (x0_hat - base) / score_temp


def commit_most_confident(emb_VxE, x0_hat_BxLxE, x_cond_BxLxE, mask_BxL, mask0_BxL, share):
  """Fixes free positions (``mask`` 1) at their nearest embedding, most confident first (closest
  x0_hat to it), until ``round(share * n)`` of each row's n positions of ``mask0`` are fixed.
  Returns the new (x_cond, mask)."""
  near = embeddings.clamp(emb_VxE, x0_hat_BxLxE)
  free = mask_BxL > 0
  n_B = jnp.sum(mask0_BxL > 0, -1)
  todo_B = jnp.round(share * n_B) - (n_B - jnp.sum(free, -1))
  conf = jnp.where(free, -jnp.sum((x0_hat_BxLxE - near) ** 2, -1), -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-conf, -1), -1)
  new = free & (rank < todo_B[:, None])
  return (jnp.where(new[..., None], near, x_cond_BxLxE),
          jnp.where(new, 0, mask_BxL).astype(mask_BxL.dtype))

