"""Likelihood: a variational upper bound on -log p(target tokens) for the embedding diffusion LM, and
the exact NLL of the AR baseline on the same positions, both in bits per token.

With ``x_t = sqrt(ab_t) EMB(w) + sqrt(1 - ab_t) eps`` (only target positions noised; a seq2seq
source stays clean, so the bound is on ``-log p(target | source)``), and the reverse model
``p(x_{t-1} | x_t) = q(x_{t-1} | x_t, x0_hat(x_t, t))`` with the posterior's own variance:

  -log p(w) <= E[-log p(w | x_1)]                                       (decoder: rounding softmax)
             + sum_{t=2..T} E[KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))]  (diffusion)
             + KL(q(x_T | x0) || N(0, I))                                (prior)

Each diffusion KL is ``c0(t, t-1)^2 ||x0 - x0_hat||^2 / (2 var(t, t-1))`` summed over target
positions and embedding dims. The sum over t is estimated with K stratified timesteps per sequence
(``t_k = 2 + floor((k + u) (T - 1) / K)``, one uniform u per sequence: unbiased, and the full grid
exactly when K = T - 1). The decoder reads ``x_1 / sqrt(ab_1)`` through the tied rounding softmax;
any decoder gives a valid bound. The denoiser runs without a self-conditioning input (zeros), as on
a sampler's first step, which is also a valid model.

Bits per token divide by the number of target positions (PAD included: the diffusion model generates
a fixed-length target region; the AR baseline stops at EOS, so its PADs cost nothing, and its NLL is
divided by the same count).
"""
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, process
from diffusion_text.baselines import ar


def diffusion_nll_terms(denoise_fn: Callable, emb_VxE, ids_BxL, target_mask_BxL,
                        diffusion: process.Diffusion, rng, num_t: int) -> dict:
  """Per-sequence bound terms in nats, each (B,): decoder, diffusion (and its Monte Carlo variance
  across the K strata), prior, and the number of target positions."""
  B = ids_BxL.shape[0]
  T = diffusion.num_steps
  ab = diffusion.alpha_bar
  m = target_mask_BxL.astype(jnp.float32)
  x0 = embeddings.embed(emb_VxE, ids_BxL)
  rng_u, rng_eps, rng_dec = jax.random.split(rng, 3)

  # decoder at t = 1
  x1 = process.q_sample(x0, jnp.full((B,), ab[1]), jax.random.normal(rng_dec, x0.shape),
                        target_mask_BxL)
  dec = jnp.sum(embeddings.token_nll(emb_VxE, x1 / jnp.sqrt(ab[1]), ids_BxL) * m, -1)

  # prior at t = T: KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per dimension
  a_T = ab[T]
  kl_T = 0.5 * (a_T * x0**2 + (1.0 - a_T) - 1.0 - jnp.log1p(-a_T))
  prior = jnp.sum(jnp.sum(kl_T, -1) * m, -1)

  # diffusion terms, t in 2..T, K stratified samples per sequence
  K = num_t
  u = jax.random.uniform(rng_u, (B, 1))
  t_BxK = 2 + jnp.floor((jnp.arange(K)[None] + u) * (T - 1) / K).astype(jnp.int32)
  t_BxK = jnp.minimum(t_BxK, T)

  def kl_at(t_B, key):
    eps = jax.random.normal(key, x0.shape)
    z = process.q_sample(x0, ab[t_B], eps, target_mask_BxL)
    x0_hat = denoise_fn(z, t_B, jnp.zeros_like(z))
    c0, _, var = process.posterior_coefficients(ab[t_B], ab[t_B - 1])
    sq = jnp.sum((x0 - x0_hat) ** 2, -1)  # (B, L)
    return c0**2 / (2.0 * var) * jnp.sum(sq * m, -1)

  keys = jax.random.split(rng_eps, K)
  kl_KxB = jax.lax.map(lambda a: kl_at(a[0], a[1]), (t_BxK.T, keys))
  diff_KxB = (T - 1) * kl_KxB
  diffusion_mean = jnp.mean(diff_KxB, 0)
  mc_var = jnp.var(diff_KxB, 0) / K if K > 1 else jnp.zeros((B,))
  return {"decoder": dec, "diffusion": diffusion_mean, "diffusion_mc_var": mc_var,
          "prior": prior, "tokens": jnp.sum(m, -1)}


def ar_nll_terms(model, params, ids_BxL, target_mask_BxL) -> dict:
  """Exact NLL (nats) of the target region under the AR baseline, per sequence.

  The AR model generates up to EOS and stops, so the PADs after EOS have probability 1: the NLL sums
  the real tokens and EOS, while ``tokens`` counts every target position, the same denominator as
  the diffusion bound (which must generate the PADs); ``real_tokens`` counts tokens and EOS."""
  logits = model.apply({"params": params}, ids_BxL, target_mask_BxL, deterministic=True)
  mean, _ = ar.token_nll(logits, ids_BxL, target_mask_BxL, ids_BxL == 0, False)
  real = jnp.sum(target_mask_BxL[:, 1:] * (ids_BxL[:, 1:] != 0), -1).astype(jnp.float32)
  tokens = jnp.sum(target_mask_BxL[:, 1:].astype(jnp.float32), -1)
  return {"nll": mean * real, "tokens": tokens, "real_tokens": real}


def nll_terms(model, params, ids_BxL, target_mask_BxL, family: str,
              diffusion: process.Diffusion, rng, num_t: int, model_cfg=None) -> dict:
  """Per-sequence terms of either family (``diffusion_nll_terms`` or ``ar_nll_terms``) and
  ``nats``, their total, each (B,). ``model_cfg`` (``config.model``) says how the embedding table
  is read (default: as learned)."""
  if family == "ar":
    o = ar_nll_terms(model, params, ids_BxL, target_mask_BxL)
    return {**o, "nats": o["nll"]}
  f = lambda z, t, x_sc: model.apply({"params": params}, z, t, x_sc, deterministic=True)
  emb = params["embedding"] if model_cfg is None else embeddings.table(params, model_cfg)
  o = diffusion_nll_terms(f, emb, ids_BxL, target_mask_BxL, diffusion, rng, num_t)
  return {**o, "nats": o["decoder"] + o["diffusion"] + o["prior"]}


def summarize(per_seq: dict) -> dict:
  """Bits per token with a 95% interval over sequences (the bound averaged over the data), and the
  share of the Monte Carlo variance of the t-estimator in it."""
  tokens = np.asarray(per_seq["tokens"], np.float64)
  if "nll" in per_seq:
    total = np.asarray(per_seq["nll"], np.float64)
    out = {}
  else:
    parts = {k: np.asarray(per_seq[k], np.float64) for k in ("decoder", "diffusion", "prior")}
    total = sum(parts.values())
    out = {f"{k}_bits_per_token": float(v.sum() / tokens.sum() / math.log(2))
           for k, v in parts.items()}
    out["mc_std_bits_per_token"] = float(np.sqrt(np.asarray(per_seq["diffusion_mc_var"]).sum())
                                         / tokens.sum() / math.log(2))
  bpt = total.sum() / tokens.sum() / math.log(2)
  # ratio estimator's standard error over sequences
  per = total / np.maximum(tokens, 1) / math.log(2)
  w = tokens / tokens.sum()
  se = float(np.sqrt(np.sum(w**2 * (per - bpt) ** 2)))
  out.update({"bits_per_token": float(bpt),
              "ci95": [float(bpt - 1.96 * se), float(bpt + 1.96 * se)],
              "perplexity_bound": float(2.0 ** bpt), "sequences": int(len(tokens)),
              "tokens": int(tokens.sum())})
  return out
