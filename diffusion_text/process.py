"""The Gaussian forward process on embedding sequences, its posterior, and timestep grids.

Ho et al. (2020) eqs. 4, 6, 7 written for an arbitrary pair of timesteps s < t, so that the same
formulas serve the full chain and any respaced grid (Song et al. 2021, DDIM, eq. 12):

  q(x_t | x0)      = N(sqrt(ab_t) x0, (1 - ab_t) I)
  q(x_s | x_t, x0) = N(c0 x0 + ct x_t, var),  a_ts = ab_t / ab_s,  b_ts = 1 - a_ts,
                     c0 = sqrt(ab_s) b_ts / (1 - ab_t),  ct = sqrt(a_ts) (1 - ab_s) / (1 - ab_t),
                     var = b_ts (1 - ab_s) / (1 - ab_t).

Respacing uses the true ``alpha_bar`` at both grid points. DiffuSeq v1 instead reuses
``alpha_bar_{t-1}`` of the full chain for a skipped step, which is wrong for any stride > 1.

A per-position ``mask_BxL`` selects the positions that are noised (1); positions with mask 0 stay clean
(DiffuSeq's partial noising of the source; infilling context).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import schedules


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Diffusion:
  """A discrete noise schedule; hashable so it can be a static argument of jitted functions."""
  schedule: str = "sqrt"
  num_steps: int = 2000

  @property
  def alpha_bar_np(self) -> np.ndarray:
    return schedules.alpha_bar(self.schedule, self.num_steps)

  @property
  def alpha_bar(self) -> jnp.ndarray:
    """(T+1,) float32 table; index 0 is the clean data."""
    return jnp.asarray(self.alpha_bar_np, jnp.float32)


def _bcast(a_B, x):
  return a_B.reshape(a_B.shape + (1,) * (x.ndim - a_B.ndim))


def apply_mask(x_new, x_keep, mask_BxL):
  """Where ``mask_BxL`` is 1 take ``x_new``, else ``x_keep`` (positions held clean)."""
  if mask_BxL is None:
    return x_new
  return jnp.where(mask_BxL[..., None] > 0, x_new, x_keep)


def q_sample(x0_BxLxE, ab_B, eps_BxLxE, mask_BxL=None):
  """Draw x_t ~ q(x_t | x0) given ``ab_B = alpha_bar[t]``; masked-out positions stay at x0."""
  ab = _bcast(ab_B, x0_BxLxE)
  x_t = jnp.sqrt(ab) * x0_BxLxE + jnp.sqrt(1.0 - ab) * eps_BxLxE
  return apply_mask(x_t, x0_BxLxE, mask_BxL)


def posterior_coefficients(ab_t, ab_s):
  """(c0, ct, var) of q(x_s | x_t, x0) for s < t (scalars or arrays of the same shape)."""
  a_ts = ab_t / ab_s
  b_ts = 1.0 - a_ts
  c0 = jnp.sqrt(ab_s) * b_ts / (1.0 - ab_t)
  ct = jnp.sqrt(a_ts) * (1.0 - ab_s) / (1.0 - ab_t)
  var = b_ts * (1.0 - ab_s) / (1.0 - ab_t)
  return c0, ct, var


def posterior_mean_var(x0, x_t, ab_t, ab_s):
  """Mean and variance of q(x_s | x_t, x0) (``ab_*`` are scalars or broadcastable arrays)."""
  c0, ct, var = posterior_coefficients(ab_t, ab_s)
  return c0 * x0 + ct * x_t, var


def eps_from_x0(x_t, x0, ab_t):
  return (x_t - jnp.sqrt(ab_t) * x0) / jnp.sqrt(1.0 - ab_t)


def timestep_grid(num_train_steps: int, num_sample_steps: int, power: float = 1.0) -> np.ndarray:
  """Decreasing integer timesteps ``[t_K, ..., t_1, 0]`` with ``t_K = T``: K sampler steps.

  ``power`` 1: evenly spaced in t (rounded). Above 1 the steps crowd toward T, where a trained
  model chooses its words (``evaluate --evaluators decided``): t = T (1 - (1 - u)^power) for u
  evenly spaced from 1 to 0, each point then moved (by the least needed) so that all are distinct
  integers. All distinct, so ``num_sample_steps`` may be at most T.
  """
  if not 1 <= num_sample_steps <= num_train_steps:
    raise ValueError(
        f"sampler steps must be in [1, T={num_train_steps}], got {num_sample_steps}")
  if not power >= 1.0:
    raise ValueError(f"grid power must be >= 1, got {power}")
  if power == 1.0:
    grid = np.round(np.linspace(num_train_steps, 0, num_sample_steps + 1)).astype(np.int32)
    assert len(np.unique(grid)) == len(grid)
    return grid
  u = np.linspace(1.0, 0.0, num_sample_steps + 1)
  grid = np.round(num_train_steps * (1.0 - (1.0 - u) ** power)).astype(np.int64)
  for i in range(1, len(grid)):  # distinct: each point below the one before it ...
    grid[i] = min(grid[i], grid[i - 1] - 1)
  for i in range(len(grid) - 2, -1, -1):  # ... and above the one after it
    grid[i] = max(grid[i], grid[i + 1] + 1)
  assert grid[0] == num_train_steps and grid[-1] == 0 and np.all(np.diff(grid) < 0)
  return grid.astype(np.int32)
