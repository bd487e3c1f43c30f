"""The one diffusion decoding path: packed ids in, packed ids out.

Every caller that turns noise (or a noised input) into words goes through ``decode_ids``: a family's
decoder (evaluation, ``Run.generate``), guided and classifier-free guided generation (``control``)
and the recovery diagnostic (``evaluate.recovery``), so all of them read the same normalised table
and round the same way.

Rounding: a model with word logits (``x0_head="softmax"`` or ``logits_head="full"``) names each word
by the argmax of its own logits at t = 1 on the final vectors; a model without them rounds to the
nearest embedding (Li et al. 2022, sec. 4.2).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from diffusion_text import embeddings, process, samplers


def has_logits(config) -> bool:
  return config.model.x0_head == "softmax" or config.model.logits_head == "full"


def denoiser_of(model, params) -> Callable:
  """``(z_t, t, x_sc) -> x0_hat`` of a diffusion LM's (EMA) parameters, deterministic."""
  return lambda z, t, x_sc: model.apply({"params": params}, z, t, x_sc, deterministic=True)


def round_ids(model, params, config, x0_BxLxE, ids_BxL, target_mask_BxL):
  """Word ids of the final vectors at mask-1 positions; the others keep ``ids``."""
  if has_logits(config):
    t_B = jnp.ones((x0_BxLxE.shape[0],), jnp.int32)
    _, logits = model.apply({"params": params}, x0_BxLxE, t_B, x0_BxLxE, deterministic=True,
                            return_logits=True)
    new = jnp.argmax(logits, -1).astype(jnp.int32)
  else:
    new = embeddings.round_to_ids(embeddings.table(params, config.model), x0_BxLxE)
  return jnp.where(target_mask_BxL > 0, new, ids_BxL)


def decode_ids(model, params, config, diffusion: process.Diffusion, rng, ids_BxL, target_mask_BxL,
               *, sampler: str = "ddpm", steps: Optional[int] = None, clamp: bool = False,
               eta: float = 0.0, guide_fn: Optional[Callable] = None,
               wrap_denoiser: Optional[Callable] = None, grid=None, x_init_BxLxE=None):
  """Samples the mask-1 positions of packed ``ids`` (the others are held at their embeddings: a
  seq2seq source, infilling context) and rounds them to words. Traceable; callers jit it.

  ``wrap_denoiser(denoise, emb_VxE) -> denoise`` changes the denoiser (classifier-free guidance);
  ``guide_fn``, ``grid`` and ``x_init_BxLxE`` are ``samplers.sample``'s.
  """
  emb = embeddings.table(params, config.model)
  denoise = denoiser_of(model, params)
  if wrap_denoiser is not None:
    denoise = wrap_denoiser(denoise, emb)
  x_cond = embeddings.embed(emb, ids_BxL)
  x0 = samplers.sample(denoise, emb, diffusion, rng, shape=x_cond.shape, steps=steps or None,
                       sampler=sampler, clamp=clamp, eta=eta, x_cond_BxLxE=x_cond,
                       mask_BxL=target_mask_BxL, guide_fn=guide_fn, grid=grid,
                       x_init_BxLxE=x_init_BxLxE)
  return round_ids(model, params, config, x0, ids_BxL, target_mask_BxL)


ACCURACY_T_FRACTIONS = (0.5, 0.75, 0.9, 0.95, 1.0)


def one_step_accuracy(model, params, config, diffusion: process.Diffusion, rng, ids_BxL,
                      target_mask_BxL, pad_mask_BxL, t_fractions=ACCURACY_T_FRACTIONS) -> dict:
  """``{"token_acc_t<t>": (correct, words)}`` sums: how often one denoiser call on
  x_t ~ q(x_t | x0) names the clean word (argmax of its logits, or the nearest embedding to x0_hat
  for a model without logits), over non-PAD target positions, at t = fraction * T. The band where
  this accuracy is 0.1-0.3 is where a sentence's plan gets made; a model that reads no word at
  t = T starts sampling from a blank. Traceable; callers jit it."""
  emb = embeddings.table(params, config.model)
  x0 = embeddings.embed(emb, ids_BxL)
  words = (target_mask_BxL > 0) & (pad_mask_BxL == 0)
  T = diffusion.num_steps
  out = {}
  for i, frac in enumerate(t_fractions):
    t = max(1, int(round(frac * T)))
    eps = jax.random.normal(jax.random.fold_in(rng, i), x0.shape)
    t_B = jnp.full((ids_BxL.shape[0],), t, jnp.int32)
    z = process.q_sample(x0, diffusion.alpha_bar[t_B], eps, target_mask_BxL)
    x_sc = jnp.zeros_like(z)
    if has_logits(config):
      _, logits = model.apply({"params": params}, z, t_B, x_sc, deterministic=True,
                              return_logits=True)
      pred = jnp.argmax(logits, -1)
    else:
      pred = embeddings.round_to_ids(emb, model.apply({"params": params}, z, t_B, x_sc,
                                                      deterministic=True))
    out[f"token_acc_t{t}"] = (jnp.sum((pred == ids_BxL) & words), jnp.sum(words))
  return out
