"""The Diffusion-LM end-to-end objective with x0-parameterisation (Li et al. 2022, eq. 2 and sec. 4.2).

For words w with embeddings x0 = EMB(w) and t ~ U{1..T}:

  L(w) = ||x0_hat(x_t, t) - x0||^2                (x0-MSE, mean over E, masked mean over L)
       + -log p(w | x0 + sigma_1 eps')            (rounding; tied softmax, sigma_1^2 = 1 - alpha_bar[1])
       + ||sqrt(alpha_bar[T]) x0||^2               (prior term KL(q(x_T | x0) || N(0, I)) up to consts)

The rounding term is taken at the first step's noise level, which is Diffusion-LM's
``x0 ~ N(EMB(w), sigma_0^2)`` latent in our indexing (alpha_bar[0] = 1 is the embedding itself): it
keeps embeddings from collapsing and teaches the decoder the scale of noise it must round through.

The loss mask is ``target_mask`` (positions that are noised and predicted), optionally times
``1 - is_pad`` (``loss_on_pad=False``): DiffuSeq users reported collapse to PAD when PAD dominates.
Terms are returned per example so that sums and counts can be aggregated exactly across hosts.

Soft absorbing state (DiffuSeq-v2, Gong et al. 2023): with ``absorb_prob`` > 0 each target position
is first replaced, with probability ``absorb_prob * t / T``, by a learned absorbing embedding, and then
Gaussian-noised as usual; the regression target stays the true embedding, so the model learns to
recover discretely corrupted tokens from the Gaussian space. The rate grows with t, so nearly clean
inputs are rarely corrupted. Sampling is unchanged (it starts from Gaussian noise).

Self-conditioning (Chen et al. 2022): with ``self_cond_prob`` > 0, each example with that probability
gets a first, gradient-free x0 estimate as the denoiser's extra input ``x_sc`` (source positions held
at their clean embeddings, as the sampler does); the others get zeros, as on a sampler's first step.

Denoiser cross-entropy (``ce_weight`` > 0; CDCD, Dieleman et al. 2022; Difformer, Gao et al. 2022):
``denoise_fn`` then returns ``(x0_hat, logits)`` and ``ce_weight * -log softmax(logits)[w]`` (masked
mean) is added: the denoiser is also trained to name the clean word at each position, at every noise
level. It is not a term of the variational bound; the bound (``likelihood.py``) is unchanged.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import flax.struct

from diffusion_text import embeddings, process
from diffusion_text.data.tokenizers import BOS, PAD, SEP


@flax.struct.dataclass
class LossTerms:
  """Per-example terms, shape (B,)."""
  mse: jnp.ndarray
  rounding: jnp.ndarray
  prior: jnp.ndarray
  weight: jnp.ndarray  # 1 for examples with at least one loss position
  ce: jnp.ndarray = 0.0  # -log p(w | x_t) of the denoiser's word logits (0 unless ce_weight > 0)
  t: jnp.ndarray = 0  # the example's timestep, int32 (B,)
  iw: jnp.ndarray = 1.0  # importance weight 1 / (T p(t)) of a non-uniform t draw (loss-aware)
  ce_weight: float = flax.struct.field(pytree_node=False, default=0.0)

  @property
  def t_loss(self):
    """The terms that depend on t, unweighted: what the loss-aware sampler tracks per t."""
    return self.mse + self.ce_weight * self.ce

  @property
  def raw_total(self):
    """The example's loss at its own t (for per-t and per-quarter instruments)."""
    return self.t_loss + self.rounding + self.prior

  @property
  def total(self):
    """The training loss: the t-dependent terms importance-weighted, so that its expectation is the
    uniform-t objective whichever t sampler drew t."""
    return self.iw * self.t_loss + self.rounding + self.prior


def _masked_mean(v_BxL, mask_BxL):
  return jnp.sum(v_BxL * mask_BxL, -1) / jnp.maximum(jnp.sum(mask_BxL, -1), 1.0)


def loss_mask(target_mask_BxL, pad_mask_BxL, loss_on_pad: bool, pad_weight: float = 1.0):
  """Per-position loss weights, float32 (B, L): target positions, PAD among them weighted by
  ``pad_weight`` (0 when not ``loss_on_pad``). ``pad_mask`` is 1 on PAD tokens."""
  pad = pad_mask_BxL.astype(jnp.float32)
  return target_mask_BxL.astype(jnp.float32) * (1.0 - pad * (1.0 - pad_weight * loss_on_pad))


def diffusion_lm_loss(denoise_fn: Callable, emb_VxE, ids_BxL, target_mask_BxL, pad_mask_BxL,
                      diffusion: process.Diffusion, rng, *, loss_on_pad: bool = True,
                      self_cond_prob: float = 0.0, absorbing_E=None,
                      absorb_prob: float = 0.0, ce_weight: float = 0.0,
                      t_power: float = 1.0, pad_weight: float = 1.0,
                      t_probs_T=None, reweight_t: bool = True) -> LossTerms:
  """Monte Carlo estimate (one t per example) of the end-to-end objective.

  Args:
    denoise_fn: ``(z_t_BxLxE, t_B, x_sc_BxLxE) -> x0_hat_BxLxE``, or ``-> (x0_hat, logits_BxLxV)``
      (needed when ``ce_weight`` > 0).
    emb_VxE: the embedding table (the loss is differentiated through it).
    ids_BxL: token ids; target_mask_BxL: 1 where positions are noised and predicted;
    pad_mask_BxL: 1 on PAD tokens.
    pad_weight: with ``loss_on_pad``, the weight of target PAD positions (about two thirds of E2E's
      target region) in the per-example masked means.
    t_power: timesteps are drawn as ``t = ceil(T u^t_power)``, u ~ U(0, 1]: 1 is uniform (the
      objective's own weighting); below 1 more examples land at high noise, where a sentence's plan
      is made (density of t/T proportional to (t/T)^(1/t_power - 1)). Every t still gets the same
      per-t optimum; only how the model's capacity is spread over t changes.
    t_probs_T: a distribution over t = 1..T to draw from instead (``loss_aware_probs``,
      ``warped_probs``); with ``reweight_t`` the t-dependent terms are then weighted by
      1 / (T p(t)), so the objective is unchanged and only its variance is (loss-aware); without,
      the draw reweights the levels of the objective (CDCD's time warping).
  """
  B = ids_BxL.shape[0]
  rng_t, rng_eps, rng_round = jax.random.split(rng, 3)
  T = diffusion.num_steps
  iw_B = jnp.ones((B,), jnp.float32)
  if t_probs_T is not None:
    t_B = jax.random.categorical(rng_t, jnp.log(t_probs_T), shape=(B,)).astype(jnp.int32) + 1
    if reweight_t:
      iw_B = 1.0 / (T * t_probs_T[t_B - 1])
  elif t_power == 1.0:  # the original draw, so runs trained before t_power keep their RNG stream
    t_B = jax.random.randint(rng_t, (B,), 1, T + 1)
  else:
    u_B = 1.0 - jax.random.uniform(rng_t, (B,))  # in (0, 1]
    t_B = jnp.clip(jnp.ceil(T * u_B ** t_power), 1, T).astype(jnp.int32)
  ab = diffusion.alpha_bar
  x0_BxLxE = embeddings.embed(emb_VxE, ids_BxL)
  eps = jax.random.normal(rng_eps, x0_BxLxE.shape)
  x_in = x0_BxLxE
  if absorb_prob > 0:
    rate_B = absorb_prob * t_B.astype(jnp.float32) / T
    absorbed = jax.random.bernoulli(jax.random.fold_in(rng, 2), rate_B[:, None], ids_BxL.shape)
    absorbed = absorbed & (target_mask_BxL > 0)
    x_in = jnp.where(absorbed[..., None], absorbing_E, x0_BxLxE)
  z_t = process.q_sample(x_in, ab[t_B], eps, target_mask_BxL)
  x_sc = jnp.zeros_like(z_t)
  if self_cond_prob > 0:
    first = process.apply_mask(_x0_and_logits(denoise_fn(z_t, t_B, x_sc))[0], x0_BxLxE,
                               target_mask_BxL)
    use_B = jax.random.bernoulli(jax.random.fold_in(rng, 1), self_cond_prob, (B,))
    x_sc = jnp.where(use_B[:, None, None], jax.lax.stop_gradient(first), 0.0)
  x0_hat, logits = _x0_and_logits(denoise_fn(z_t, t_B, x_sc))
  m = loss_mask(target_mask_BxL, pad_mask_BxL, loss_on_pad, pad_weight)
  mse = _masked_mean(jnp.mean((x0_hat - x0_BxLxE) ** 2, -1), m)
  ce = 0.0
  if ce_weight > 0:
    if logits is None:
      raise ValueError("ce_weight > 0 needs a denoise_fn that returns (x0_hat, logits)")
    ce = _masked_mean(embeddings.nll_of(logits, ids_BxL), m)
  x0_noisy = x0_BxLxE + jnp.sqrt(1.0 - ab[1]) * jax.random.normal(rng_round, x0_BxLxE.shape)
  rounding = _masked_mean(embeddings.token_nll(emb_VxE, x0_noisy, ids_BxL), m)
  prior = _masked_mean(jnp.mean(ab[T] * x0_BxLxE**2, -1), m)
  weight = (jnp.sum(m, -1) > 0).astype(jnp.float32)
  return LossTerms(mse=mse, rounding=rounding, prior=prior, weight=weight,
                   ce=ce * jnp.ones_like(mse), t=t_B, iw=iw_B, ce_weight=ce_weight)


# Loss-aware timestep sampling (DiffuSeq's default, after Nichol & Dhariwal 2021's importance
# sampling of L_vlb): keep the last ``K`` training losses seen at each noise level; once every level
# has ``K``, draw t with probability proportional to the root mean square of its level's history,
# mixed with a small uniform share so no t starves. DiffuSeq keeps one history per t, which its
# batches of thousands fill in a few steps; at a CPU batch of 64 and T = 2000 that takes over 1,000
# steps, so the levels here are ``LOSS_AWARE_BINS`` bins of consecutive t (one per t when T is
# smaller), with p(t) spread evenly within a bin. The history lives in the train state
# (``LossAwareTrainState.t_stats``): it is checkpointed, and a resumed run draws as an
# uninterrupted one does.
LOSS_AWARE_HISTORY = 10
LOSS_AWARE_BINS = 100
LOSS_AWARE_UNIFORM = 1e-3


def quarter_of(t, num_steps: int):
  """Which quarter of 1..T each timestep ``t`` is in (0 least noisy, 3 noisiest): the levels of the
  training loop's ``loss_q*`` instruments."""
  return jnp.minimum((t - 1) * 4 // num_steps, 3)


def loss_aware_init(num_steps: int, history: int = LOSS_AWARE_HISTORY,
                    bins: int = LOSS_AWARE_BINS) -> dict:
  n = min(num_steps, bins)
  return {"hist": jnp.zeros((n, history), jnp.float32), "count": jnp.zeros((n,), jnp.int32)}


def _bin_of(t, num_steps: int, bins: int):
  return (t - 1) * bins // num_steps


def _levels_to_t(stats: dict, w_N, num_steps: int, uniform: float):
  """p(t) over t = 1..T from nonnegative level weights ``w_N``, mixed with a ``uniform`` share and
  spread evenly over each level's t; uniform until every level has a full history."""
  N, K = stats["hist"].shape
  T = num_steps
  p_bin = (1.0 - uniform) * w_N / jnp.maximum(jnp.sum(w_N), 1e-30) + uniform / N
  b_T = _bin_of(jnp.arange(1, T + 1), T, N)
  size_N = jnp.zeros((N,), jnp.float32).at[b_T].add(1.0)
  p = p_bin[b_T] / size_N[b_T]
  return jnp.where(jnp.all(stats["count"] >= K) & (jnp.sum(w_N) > 0), p, jnp.full((T,), 1.0 / T))


def loss_aware_probs(stats: dict, num_steps: int, uniform: float = LOSS_AWARE_UNIFORM):
  """p(t) over t = 1..T, shape (T,): proportional to the RMS of each level's recent losses."""
  return _levels_to_t(stats, jnp.sqrt(jnp.mean(stats["hist"]**2, -1)), num_steps, uniform)


# Time warping (CDCD, Dieleman et al. 2022) on the same per-level history: fit a monotone curve to
# the mean training loss against t (here the running maximum of the levels' means, from 0 below the
# first level) and draw t with density proportional to its slope, i.e. u ~ U(0, 1) mapped through
# the inverse of the normalised curve. Training then spreads over the levels where the loss changes,
# not where it is large. As in CDCD the draw is not importance-weighted: warping changes the weight
# each noise level gets in the objective (every level keeps its own optimum).
WARPED_UNIFORM = 0.05


def warped_probs(stats: dict, num_steps: int, uniform: float = WARPED_UNIFORM):
  """p(t) over t = 1..T, shape (T,): proportional to the rise of the fitted loss curve per level."""
  curve_N = jax.lax.cummax(jnp.mean(stats["hist"], -1))
  rise_N = jnp.diff(curve_N, prepend=jnp.zeros((1,), curve_N.dtype))
  return _levels_to_t(stats, jnp.maximum(rise_N, 0.0), num_steps, uniform)


T_SAMPLER_PROBS = {"loss_aware": loss_aware_probs, "warped": warped_probs}
# whether a sampler's draw is importance-weighted back to the uniform-t objective
T_SAMPLER_REWEIGHTS = {"loss_aware": True, "warped": False}


def loss_aware_update(stats: dict, t_B, loss_B, num_steps: int) -> dict:
  """The history with each example's loss written at its level, in a ring of ``K`` per level;
  examples of one batch at the same level take consecutive slots, in batch order."""
  hist, count = stats["hist"], stats["count"]
  idx = _bin_of(t_B, num_steps, hist.shape[0])
  same_BxB = idx[:, None] == idx[None, :]
  earlier_B = jnp.sum(jnp.tril(same_BxB, -1), -1)  # examples before this one at its level
  slot = (count[idx] + earlier_B) % hist.shape[1]
  loss_B = jnp.where(jnp.isfinite(loss_B), loss_B, 0.0)
  return {"hist": hist.at[idx, slot].set(jax.lax.stop_gradient(loss_B).astype(jnp.float32)),
          "count": count.at[idx].add(1)}


def null_source(ids_BxL, target_mask_BxL):
  """The null condition of classifier-free guidance: source tokens replaced by PAD; BOS, SEP and
  the target region kept, so positions and the target's place in the sequence do not change."""
  src = (target_mask_BxL == 0) & (ids_BxL != BOS) & (ids_BxL != SEP)
  return jnp.where(src, PAD, ids_BxL)


def drop_condition(ids_BxL, target_mask_BxL, rng, prob: float):
  """Condition dropout for classifier-free guidance: each example's source becomes the null
  condition with probability ``prob``."""
  drop_B = jax.random.bernoulli(rng, prob, (ids_BxL.shape[0],))
  return jnp.where(drop_B[:, None], null_source(ids_BxL, target_mask_BxL), ids_BxL)


def reveal_targets(target_mask_BxL, pad_mask_BxL, rng, prob: float):
  """Training with revealed targets: each example, with probability ``prob``, draws a rate
  u ~ U(0, 1) and each of its target words (not PAD) becomes a clean, unscored position with
  probability u. The model then learns to read target words already written, as a sampler that
  commits words one group at a time (``samplers.sample(commit=True)``) shows it them."""
  rng_row, rng_rate, rng_pos = jax.random.split(rng, 3)
  B = target_mask_BxL.shape[0]
  rate_B = jnp.where(jax.random.bernoulli(rng_row, prob, (B,)),
                     jax.random.uniform(rng_rate, (B,)), 0.0)
  reveal = jax.random.bernoulli(rng_pos, rate_B[:, None], target_mask_BxL.shape)
  reveal = reveal & (target_mask_BxL > 0) & (pad_mask_BxL == 0)
  return jnp.where(reveal, 0, target_mask_BxL).astype(target_mask_BxL.dtype)


def _x0_and_logits(out):
  return out if isinstance(out, tuple) else (out, None)
