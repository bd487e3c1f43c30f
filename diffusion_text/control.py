"""Controllable generation: classifier guidance, constraints, infilling, length, classifier-free guidance.

This module holds the guidance terms and the inputs; the decoder that applies them (the ascent,
classifier-free guidance, ``make_decoder``) is ``decoding``'s, re-exported here.

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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, process
from diffusion_text.data import e2e, tokenizers
# the decoding side of control lives in ``decoding`` (the one decoding path); these names stay
# importable from here, where users of guidance look for them
from diffusion_text.decoding import (Guidance, cfg_denoiser, generate_ids, make_decoder,  # noqa: F401
                                     make_guide_fn, score)


@dataclasses.dataclass(frozen=True)
class Term:
  """A guidance term: ``fn(x_BxLxE, t_B, args) -> (B,)`` to increase, scaled by ``weight``;
  ``reads_model``: ``fn(x, t_B, args, logits_fn)`` also reads the guided model's own word logits,
  ``logits_fn(x, t_B) -> (B, L, V)``, which the decoder supplies."""
  fn: Callable
  weight: float = 1.0
  name: str = ""
  reads_model: bool = False


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


def presence_term(weight: float = 1.0, name: str = "presence") -> Term:
  """``sum_g log p(some generated position says a word of group g)`` under the guided model's own
  word distributions at (x, t), each position read independently:
  ``p = 1 - prod_l (1 - sum_{w in g} p_l(w))`` over the positions where the row's mask is 1. The
  ``args`` are (groups (B, G, W) word ids, -1 padding; mask (B, L)): with E2E's ``slot_groups``,
  guidance toward saying every field of the MR. The model is the classifier: it reads the source,
  so it knows where in its sentence a value would go."""
  def fn(x, t_B, args, logits_fn):
    groups_BxGxW, mask_BxL = args
    p = jax.nn.softmax(logits_fn(x, t_B), -1)
    valid = groups_BxGxW >= 0
    hot = jax.nn.one_hot(jnp.maximum(groups_BxGxW, 0), p.shape[-1]) * valid[..., None]
    p_group = jnp.einsum("blv,bgv->blg", p, jnp.minimum(jnp.sum(hot, 2), 1.0))
    log_absent = jnp.sum(jnp.log1p(-jnp.minimum(p_group, 1.0 - 1e-6))
                         * mask_BxL[..., None].astype(p.dtype), 1)
    log_present = jnp.log(-jnp.expm1(jnp.minimum(log_absent, -1e-12)))
    return jnp.sum(jnp.where(jnp.any(valid, -1), log_present, 0.0), -1)
  return Term(fn=fn, weight=weight, name=name, reads_model=True)


# --------------------------------------------------------------------------------------- inputs

def slot_groups(tok: tokenizers.Tokenizer, sources: Sequence[str]) -> np.ndarray:
  """(N, G, W) word ids of each E2E source's ``e2e.anchor_groups`` (sources as the model reads
  them, delexicalised), -1 padding; words outside the vocabulary are dropped, and a group left
  empty too. The ``presence_term``'s groups."""
  rows = []
  for src in sources:
    groups = []
    for words in e2e.anchor_groups(src):
      ids = sorted({i for w in words for i in tok.encode(w) if i >= len(tokenizers.SPECIALS)})
      if ids:
        groups.append(ids)
    rows.append(groups)
  G = max([len(r) for r in rows] + [1])
  W = max([len(g) for r in rows for g in r] + [1])
  out = np.full((len(rows), G, W), -1, np.int32)
  for n, groups in enumerate(rows):
    for g, ids in enumerate(groups):
      out[n, g, :len(ids)] = ids
  return out


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
