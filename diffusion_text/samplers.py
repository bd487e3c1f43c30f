"""Reverse-process samplers, each one jitted ``lax.scan`` over a decreasing timestep grid.

Every sampler step maps (x_t, x0_hat) to x_s for a grid pair s < t and uses the true ``alpha_bar`` of
both grid points, so any number of steps in [1, T] is a correct respacing:

* ``ddpm``: ancestral sampling from the posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 7).
* ``ddim``: Song et al. (2021) eq. 12 with noise scale ``eta``; eta = 1 is exactly the ddpm step
  (same mean and variance), eta = 0 is deterministic.

Before each step the denoiser's x0_hat passes through hooks: the clamping trick (nearest embedding,
Li et al. 2022 sec. 4.2) and re-anchoring of positions outside ``mask`` to their clean values (DiffuSeq
source tokens, infilling context). After each step those positions are re-imposed on x_s as well.
Memory does not grow with the number of steps.
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, process


def ddpm_step(rng, x_t, x0_hat, ab_t, ab_s, *, eta: float = 1.0):
  del eta
  mean, var = process.posterior_mean_var(x0_hat, x_t, ab_t, ab_s)
  return mean + jnp.sqrt(var) * jax.random.normal(rng, x_t.shape)


def ddim_step(rng, x_t, x0_hat, ab_t, ab_s, *, eta: float = 0.0):
  eps_hat = process.eps_from_x0(x_t, x0_hat, ab_t)
  var = eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)
  dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_s - var, 0.0))
  noise = jax.random.normal(rng, x_t.shape) if eta > 0 else 0.0
  return jnp.sqrt(ab_s) * x0_hat + dir_coef * eps_hat + jnp.sqrt(var) * noise


SAMPLERS: dict[str, Callable] = {"ddpm": ddpm_step, "ddim": ddim_step}


def sample(denoise_fn: Callable, emb_VxE, diffusion: process.Diffusion, rng, *,
           shape: tuple[int, int, int], steps: Optional[int] = None, sampler: str = "ddpm",
           clamp: bool = False, eta: float = 0.0, x_cond_BxLxE=None, mask_BxL=None):
  """Draw x_0 from the reverse process; returns the final x_0 of shape ``shape`` = (B, L, E).

  Args:
    denoise_fn: ``(z_t_BxLxE, t_B) -> x0_hat_BxLxE`` (e.g. the EMA denoiser, deterministic).
    emb_VxE: embedding table, for clamping.
    steps: number of sampler steps K (default T); the grid is ``process.timestep_grid(T, K)``.
    sampler: a key of ``SAMPLERS``. eta: ddim noise scale (ignored by ddpm).
    x_cond_BxLxE, mask_BxL: positions with mask 0 are held at ``x_cond`` throughout.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
  step_fn = SAMPLERS[sampler]
  T = diffusion.num_steps
  grid = process.timestep_grid(T, steps or T)
  ab_table = diffusion.alpha_bar
  B = shape[0]
  if mask_BxL is not None and x_cond_BxLxE is None:
    raise ValueError("mask_BxL needs x_cond_BxLxE (the clean values of masked-out positions)")
  x_cond = x_cond_BxLxE if x_cond_BxLxE is not None else jnp.zeros(shape, jnp.float32)

  rng_init, rng_steps = jax.random.split(rng)
  x_T = process.apply_mask(jax.random.normal(rng_init, shape), x_cond, mask_BxL)

  def body(x_t, inputs):
    t, s, key = inputs
    x0_hat = denoise_fn(x_t, jnp.full((B,), t, jnp.int32))
    if clamp:
      x0_hat = embeddings.clamp(emb_VxE, x0_hat)
    x0_hat = process.apply_mask(x0_hat, x_cond, mask_BxL)
    x_s = step_fn(key, x_t, x0_hat, ab_table[t], ab_table[s], eta=eta)
    return process.apply_mask(x_s, x_cond, mask_BxL), None

  ts = jnp.asarray(grid[:-1])
  ss = jnp.asarray(grid[1:])
  keys = jax.random.split(rng_steps, len(grid) - 1)
  x_0, _ = jax.lax.scan(body, x_T, (ts, ss, keys))
  return x_0


def grid_alpha_bars(diffusion: process.Diffusion, steps: int) -> np.ndarray:
  """(t, s, alpha_bar_t, alpha_bar_s) rows of the grid a sampler with ``steps`` steps walks."""
  grid = process.timestep_grid(diffusion.num_steps, steps)
  ab = diffusion.alpha_bar_np
  return np.stack([grid[:-1], grid[1:], ab[grid[:-1]], ab[grid[1:]]], axis=1)
