"""Controllable generation: classifier guidance, constraints, infilling, length, classifier-free guidance.

**Guidance** (Li et al. 2022, sec. 5.2). After each sampler step t -> s proposes ``x_s``, K gradient
steps (Adagrad, ``step_size``) move it uphill on

    sum_i w_i log p_i(c_i | x, s)  -  lambda ||x - x_s||^2 / (2 v)

where the first part is any weighted sum of differentiable terms (attribute classifiers on noisy
embeddings, hand-written constraints) and the second is the fluency term, the log-density of the
sampler's own proposal: v is the ancestral posterior variance of q(x_s | x_t, x0), floored at the
rounding noise ``1 - alpha_bar[1]`` so that deterministic samplers and the last step are guided too.
It is a hook of ``samplers.sample``, so every sampler is guided the same way; positions held by a
mask (seq2seq source, infilling context) never move. A term's gradient is zero where it is
constant, so a zero-weight term leaves sampling unchanged.

A ``Term`` is ``fn(x_BxLxE, t_B, args) -> (B,)`` plus a weight; ``args`` is a per-example pytree
(e.g. the target words of each row) passed at call time, so one compiled sampler serves any targets.

**Infilling and length** need no classifier: context tokens are fixed through the sampler's mask
(``infill_inputs``), and a target length is a fixed EOS after n generated positions
(``length_inputs``), optionally with ``avoid_tokens_term`` keeping PAD/EOS out of the generated span.

**Classifier-free guidance** (Ho & Salimans 2022) for seq2seq models trained with
``diffusion.cond_drop_prob``: ``x0 = x0(null) + s (x0(source) - x0(null))`` with the null condition
of ``losses.null_source``; s = 1 is the conditional model, s > 1 sharpens the conditioning. Both passes
run as one batch of 2B.
"""
import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffusion_text import batching, decoding, embeddings, losses, process
from diffusion_text.data import tokenizers


@dataclasses.dataclass(frozen=True)
class Term:
  """A guidance term: ``fn(x_BxLxE, t_B, args) -> (B,)`` to increase, scaled by ``weight``."""
  fn: Callable
  weight: float = 1.0
  name: str = ""


@dataclasses.dataclass(frozen=True)
class Guidance:
  terms: tuple = ()
  num_steps: int = 3  # K gradient steps per sampler step
  step_size: float = 0.1  # Adagrad learning rate
  fluency_weight: float = 0.01  # lambda: weight of log q(x | proposal)


def score(terms: Sequence[Term], x_BxLxE, t_B, args: Sequence[Any]):
  """Weighted sum of the terms, (B,)."""
  total = jnp.zeros(x_BxLxE.shape[:1], jnp.float32)
  for term, a in zip(terms, args):
    total = total + term.weight * term.fn(x_BxLxE, t_B, a)
  return total


def make_guide_fn(guidance: Guidance, diffusion: process.Diffusion, args: Sequence[Any]):
  """The ``guide_fn(x_s, t, s)`` hook of ``samplers.sample`` for these terms and per-row ``args``."""
  ab = diffusion.alpha_bar
  floor = 1.0 - ab[1]
  opt = optax.adagrad(guidance.step_size)

  def guide(x_s, t, s):
    _, _, var = process.posterior_coefficients(ab[t], ab[s])
    v = jnp.maximum(var, floor)
    s_B = jnp.full(x_s.shape[:1], s, jnp.int32)

    def objective(x):
      fluency = jnp.sum((x - x_s) ** 2) / (2.0 * v)
      return jnp.sum(score(guidance.terms, x, s_B, args)) - guidance.fluency_weight * fluency

    x, state = x_s, opt.init(x_s)
    for _ in range(guidance.num_steps):
      g = jax.grad(objective)(x)
      updates, state = opt.update(jax.tree_util.tree_map(jnp.negative, g), state)  # ascend
      x = optax.apply_updates(x, updates)
    return x

  return guide


# ---------------------------------------------------------------------------------------- terms

def classifier_term(log_prob_fn: Callable, weight: float = 1.0, name: str = "classifier") -> Term:
  """Sum of a classifier's log-probabilities of each row's target labels.

  ``log_prob_fn(x, t) -> (B, C)`` (e.g. ``classifier.log_prob_fn``); the term's ``args`` are label
  ids (B, K), -1 padding unused slots (rows may have different numbers of targets)."""
  def fn(x, t_B, labels_BxK):
    lp = log_prob_fn(x, t_B)
    picked = jnp.take_along_axis(lp, jnp.maximum(labels_BxK, 0), axis=1)
    return jnp.sum(jnp.where(labels_BxK >= 0, picked, 0.0), axis=1)
  return Term(fn=fn, weight=weight, name=name)


def avoid_tokens_term(emb_VxE, diffusion: process.Diffusion, token_ids: Sequence[int],
                      weight: float = 1.0, name: str = "avoid") -> Term:
  """``sum_positions log(1 - p(any of token_ids | x))`` under the rounding softmax of the x0 implied
  by x (``x / sqrt(alpha_bar_t)``), over the positions where the row's ``args`` mask (B, L) is 1.
  With PAD and EOS it keeps a span from ending early (length control)."""
  ids = jnp.asarray(token_ids, jnp.int32)
  ab = diffusion.alpha_bar

  def fn(x, t_B, mask_BxL):
    x0 = x / jnp.sqrt(ab[t_B])[:, None, None]
    lp = jax.nn.log_softmax(embeddings.rounding_logits(emb_VxE, x0), axis=-1)
    p_bad = jnp.sum(jnp.exp(lp[..., ids]), axis=-1)
    return jnp.sum(jnp.log1p(-jnp.minimum(p_bad, 1.0 - 1e-6)) * mask_BxL, axis=-1)
  return Term(fn=fn, weight=weight, name=name)


# ------------------------------------------------------------------------- classifier-free guidance

def cfg_denoiser(denoise_fn: Callable, emb_VxE, ids_BxL, target_mask_BxL, scale: float):
  """Classifier-free guided ``denoise_fn(z, t, x_sc)`` for packed seq2seq rows (one 2B batch).

  The null branch sees the null condition at every source position of both its inputs: the noisy
  state and the self-conditioning estimate (which the sampler re-anchors to the real source), as in
  training, where condition dropout replaces the source before the first estimate is made."""
  x_null = embeddings.embed(emb_VxE, losses.null_source(ids_BxL, target_mask_BxL))

  def f(z, t_B, x_sc):
    z_null = process.apply_mask(z, x_null, target_mask_BxL)
    x_sc_null = process.apply_mask(x_sc, x_null, target_mask_BxL)
    both = denoise_fn(jnp.concatenate([z, z_null]), jnp.concatenate([t_B, t_B]),
                      jnp.concatenate([x_sc, x_sc_null]))
    x_c, x_u = jnp.split(both, 2)
    return x_u + scale * (x_c - x_u)
  return f


# --------------------------------------------------------------------------------------- inputs

def infill_inputs(tok: tokenizers.Tokenizer, left: str, right: str, span: int, max_len: int):
  """Unconditional-layout row ``[BOS] left <span positions> right [EOS] PAD..`` and its mask (1 on
  the span). The model may put PAD inside the span: ``infill_text`` drops it (variable fill)."""
  l, r = tok.encode(left), tok.encode(right)
  n = 1 + len(l) + span + len(r) + 1
  if n > max_len:
    raise ValueError(f"context and span need {n} positions, the model has {max_len}")
  ids = np.full((max_len,), tokenizers.PAD, np.int32)
  ids[:n] = [tokenizers.BOS] + l + [tokenizers.PAD] * span + r + [tokenizers.EOS]
  mask = np.zeros((max_len,), np.int32)
  mask[1 + len(l): 1 + len(l) + span] = 1
  return ids, mask


def infill_text(tok: tokenizers.Tokenizer, ids, mask) -> str:
  """The words generated in the span (PAD, EOS and other special tokens dropped)."""
  span = [int(i) for i, m in zip(ids, mask) if m and i >= len(tokenizers.SPECIALS)]
  return tok.decode(span + [tokenizers.EOS]) if span else ""


def length_inputs(length: int, max_len: int):
  """Row ``[BOS] <length positions> [EOS] PAD..`` and its mask: exactly ``length`` tokens are
  generated before a fixed EOS."""
  if not 1 <= length <= max_len - 2:
    raise ValueError(f"length must be in [1, {max_len - 2}], got {length}")
  ids = np.full((max_len,), tokenizers.PAD, np.int32)
  ids[0], ids[length + 1] = tokenizers.BOS, tokenizers.EOS
  mask = np.zeros((max_len,), np.int32)
  mask[1:length + 1] = 1
  return ids, mask


# -------------------------------------------------------------------------------------- sampling

def make_decoder(run, *, guidance: Optional[Guidance] = None, cfg_scale: Optional[float] = None,
                 sampler: str = "ddpm", steps: Optional[int] = None, clamp: bool = False,
                 eta: float = 0.0):
  """Jitted ``(rng, ids_BxL, mask_BxL, term_args) -> ids_BxL`` for a diffusion ``run``: mask-1
  positions generated (guided by ``guidance`` and/or classifier-free ``cfg_scale``), the others held
  at ``ids``. ``term_args`` is a tuple with one per-row pytree per guidance term."""
  if run.config.model.family != "diffusion":
    raise ValueError("guidance needs a diffusion run")
  if cfg_scale is not None and run.config.diffusion.cond_drop_prob <= 0:
    raise ValueError(f"{run.workdir} was not trained with condition dropout "
                     "(diffusion.cond_drop_prob = 0): classifier-free guidance has no null model")
  diffusion, model, params = run.diffusion, run.model, run.params

  @jax.jit
  def decode(rng, ids_BxL, mask_BxL, term_args):
    wrap = None
    if cfg_scale is not None:
      wrap = lambda denoise, emb: cfg_denoiser(denoise, emb, ids_BxL, mask_BxL, cfg_scale)
    guide = make_guide_fn(guidance, diffusion, term_args) if guidance and guidance.terms else None
    return decoding.decode_ids(model, params, run.config, diffusion, rng, ids_BxL, mask_BxL,
                               sampler=sampler, steps=steps, clamp=clamp, eta=eta, guide_fn=guide,
                               wrap_denoiser=wrap)

  return decode


def generate_ids(decode, ids_NxL, mask_NxL, term_args=(), *, batch_size: int = 64, seed: int = 0):
  """Runs ``decode`` over N rows in batches (the last one padded to keep one compiled shape)."""
  batch_size = min(batch_size, len(ids_NxL))
  leaves, treedef = jax.tree_util.tree_flatten(term_args)
  out = []
  for start, n, (ids, mask, *args) in batching.padded_batches(batch_size, ids_NxL, mask_NxL,
                                                              *leaves):
    args = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in args])
    out.append(np.asarray(decode(jax.random.fold_in(jax.random.PRNGKey(seed), start // batch_size),
                                 jnp.asarray(ids), jnp.asarray(mask), args))[:n])
  return np.concatenate(out)
