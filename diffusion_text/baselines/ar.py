"""An autoregressive prefix-LM baseline on the same backbone and tokenizer as the diffusion models.

It reads the same packed sequences (``[BOS] source [SEP] target [EOS] PAD``; unconditional data is
all target). Attention is a prefix-LM mask: source positions see the whole source (bidirectional, as
an encoder), target positions see the source and earlier target positions (causal). It uses the
denoiser's Transformer blocks (same width, depth, heads and MLP), token embeddings of width D tied to
the output layer, and is trained by next-token cross-entropy on target positions. Decoding is greedy
or beam search, both one ``lax.while_loop`` over positions that starts at the batch's first target
position and stops once every row has written EOS. Decoding keeps a key/value cache: one forward over
the whole packed input fills it (the source attends only to itself, so its keys and values are
final), then each step runs the blocks on one token. The logits are those of a full forward on the
sequence so far (``test_ar.py``).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffusion_text import denoiser, embeddings
from diffusion_text.data.tokenizers import EOS, PAD


def prefix_lm_mask(target_mask_BxL):
  """(B, 1, L, L) bool: query i may attend to key j if j <= i or j is a source position."""
  L = target_mask_BxL.shape[-1]
  causal = jnp.tril(jnp.ones((L, L), bool))
  source_key = (target_mask_BxL == 0)[:, None, None, :]
  return causal[None, None] | source_key


class ARTransformer(nn.Module):
  cfg: denoiser.ModelConfig

  @nn.compact
  def __call__(self, ids_BxL, target_mask_BxL, deterministic: bool = True):
    """Next-token logits (B, L, V): position i predicts token i + 1."""
    cfg = self.cfg
    emb_VxD = self.param("token_emb", denoiser._p(nn.initializers.normal(0.02), ("vocab", "embed")),
                         (cfg.vocab_size, cfg.width))
    pos_LxD = self.param("pos_emb", denoiser._p(nn.initializers.normal(0.02), ("len", "embed")),
                         (cfg.max_len, cfg.width))
    L = ids_BxL.shape[1]
    x = jnp.take(emb_VxD, ids_BxL, axis=0) + pos_LxD[None, :L]
    x = nn.Dropout(cfg.dropout)(x.astype(jnp.dtype(cfg.dtype)), deterministic=deterministic)
    x = denoiser.apply_blocks(cfg, x, prefix_lm_mask(target_mask_BxL), deterministic)
    x = denoiser.layer_norm(cfg, "ln_out")(x)
    return jnp.einsum("bld,vd->blv", x.astype(jnp.float32), emb_VxD)


def init_params(cfg: denoiser.ModelConfig, rng):
  ids = jnp.zeros((1, cfg.max_len), jnp.int32)
  return ARTransformer(cfg).init({"params": rng}, ids, jnp.ones_like(ids))["params"]


def token_nll(logits_BxLxV, ids_BxL, target_mask_BxL, pad_mask_BxL, loss_on_pad: bool):
  """Per-example mean NLL of target tokens and the weight (1 if any position counts), each (B,)."""
  nll = embeddings.nll_of(logits_BxLxV[:, :-1], ids_BxL[:, 1:])
  m = target_mask_BxL[:, 1:].astype(jnp.float32)
  if not loss_on_pad:
    m = m * (1 - pad_mask_BxL[:, 1:]).astype(jnp.float32)
  count = jnp.sum(m, -1)
  return jnp.sum(nll * m, -1) / jnp.maximum(count, 1.0), (count > 0).astype(jnp.float32)


class _Cached:
  """Incremental decoding of an ``ARTransformer`` with a key/value cache per block.

  ``start(ids, target_mask)`` runs one forward over the packed input (targets PAD) and returns the
  cache state; ``logits(state, ids, i)`` the next-token logits (B, V) for position ``i``, given
  ``ids`` filled up to ``i - 1``, and the state with position ``i - 1`` written. Rows whose
  position ``i - 1`` is still source read the first forward's logits, exact for the source.
  """

  def __init__(self, model, params):
    self.cfg = cfg = model.cfg
    self.p = denoiser.convert_layout(params, False, cfg.num_layers)  # blocks one by one
    self.block = denoiser.Block(dataclasses.replace(cfg, dropout=0.0), True)
    self.ln_out = denoiser.layer_norm(cfg, "ln_out")

  def _run(self, ids_BxS, start, mask, caches, write_B):
    p, cfg = self.p, self.cfg
    S = ids_BxS.shape[1]
    pos = jax.lax.dynamic_slice_in_dim(p["pos_emb"], start, S, axis=0)
    x = (jnp.take(p["token_emb"], ids_BxS, axis=0) + pos[None]).astype(jnp.dtype(cfg.dtype))
    new = []
    for l, (k, v) in enumerate(caches):
      x, kv = self.block.apply({"params": p[f"block_{l}"]}, x, mask, cache=(k, v, start, write_B))
      new.append(kv)
    x = self.ln_out.apply({"params": p["ln_out"]}, x)
    return jnp.einsum("bld,vd->blv", x.astype(jnp.float32), p["token_emb"]), new

  def start(self, ids_BxL, target_mask_BxL):
    cfg = self.cfg
    B, L = ids_BxL.shape
    shape = (B, L, cfg.num_heads, cfg.width // cfg.num_heads)
    empty = [(jnp.zeros(shape, jnp.dtype(cfg.dtype)),) * 2 for _ in range(cfg.num_layers)]
    logits, caches = self._run(ids_BxL, 0, prefix_lm_mask(target_mask_BxL), empty,
                               jnp.ones((B,), bool))
    return {"first": logits, "caches": caches, "target_mask": target_mask_BxL}

  def logits(self, state, ids_BxL, i):
    tm = state["target_mask"]
    B, L = ids_BxL.shape
    prev = i - 1
    is_target_B = jax.lax.dynamic_index_in_dim(tm, prev, axis=1, keepdims=False) > 0
    tok = jax.lax.dynamic_slice_in_dim(ids_BxL, prev, 1, axis=1)
    mask = jnp.broadcast_to((jnp.arange(L) <= prev)[None, None, None, :], (B, 1, 1, L))
    step, caches = self._run(tok, prev, mask, state["caches"], is_target_B)
    first = jax.lax.dynamic_index_in_dim(state["first"], prev, axis=1, keepdims=False)
    return jnp.where(is_target_B[:, None], step[:, 0], first), dict(state, caches=caches)

  @staticmethod
  def reorder(state, rows_B):
    """The state of rows ``rows_B`` (beam search keeps the caches of the beams it extends)."""
    take = lambda a: jnp.take(a, rows_B, axis=0)
    return {"first": take(state["first"]), "target_mask": take(state["target_mask"]),
            "caches": [(take(k), take(v)) for k, v in state["caches"]]}


def _first_target(target_mask_BxL):
  """The earliest target position in the batch (at least 1: position 0 is never predicted)."""
  L = target_mask_BxL.shape[1]
  first_B = jnp.where(jnp.any(target_mask_BxL > 0, -1), jnp.argmax(target_mask_BxL > 0, -1), L)
  return jnp.maximum(jnp.min(first_B), 1).astype(jnp.int32)


def _positions_loop(body, carry, target_mask_BxL, done_of):
  """Runs ``body(carry, i)`` for i from the batch's first target position while i < L and some row
  is not done (``done_of(carry)``): a batch stops at its longest output, not at L."""
  L = target_mask_BxL.shape[1]
  cond = lambda c: (c[0] < L) & ~jnp.all(done_of(c[1]))
  step = lambda c: (c[0] + 1, body(c[1], c[0]))
  return jax.lax.while_loop(cond, step, (_first_target(target_mask_BxL), carry))[1]


class _FullForward:
  """The same interface without a cache: a full forward per position (the reference the cache is
  tested and benchmarked against, ``cache=False``)."""

  def __init__(self, model, params):
    self.model, self.params = model, params

  def start(self, ids_BxL, target_mask_BxL):
    return {"target_mask": target_mask_BxL}

  def logits(self, state, ids_BxL, i):
    logits = self.model.apply({"params": self.params}, ids_BxL, state["target_mask"],
                              deterministic=True)
    return jax.lax.dynamic_index_in_dim(logits, i - 1, axis=1, keepdims=False), state

  @staticmethod
  def reorder(state, rows_B):
    return {"target_mask": jnp.take(state["target_mask"], rows_B, axis=0)}


def greedy_decode(model, params, ids_BxL, target_mask_BxL, cache: bool = True):
  """Fills target positions left to right with the most likely token; PAD after EOS."""
  return sample_decode(model, params, ids_BxL, target_mask_BxL, None, 0.0, cache)


def sample_decode(model, params, ids_BxL, target_mask_BxL, rng, temperature: float,
                  cache: bool = True):
  """Fills target positions left to right with a token drawn from softmax(logits / temperature)
  (ancestral sampling; temperature 0 is greedy decoding); PAD after EOS."""
  ids = jnp.where(target_mask_BxL > 0, PAD, ids_BxL)
  cached = (_Cached if cache else _FullForward)(model, params)

  def body(carry, i):
    ids, done, state = carry
    logits, state = cached.logits(state, ids, i)
    if temperature > 0:
      nxt = jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature, -1)
    else:
      nxt = jnp.argmax(logits, -1)
    nxt = nxt.astype(jnp.int32)
    write = target_mask_BxL[:, i] > 0
    tok = jnp.where(done, PAD, nxt)
    ids = ids.at[:, i].set(jnp.where(write, tok, ids[:, i]))
    done = done | (write & (tok == EOS))
    return ids, done, state

  carry = (ids, jnp.zeros(ids.shape[0], bool), cached.start(ids, target_mask_BxL))
  return _positions_loop(body, carry, target_mask_BxL, lambda c: c[1])[0]


def beam_decode(model, params, ids_BxL, target_mask_BxL, beam_size: int, alpha: float = 0.0,
                cache: bool = True, nbest: bool = False):
  """Beam search over target positions; returns the best beam (score / length**alpha) per input,
  (B, L), or with ``nbest`` all of them, best first, (B, K, L).

  With ``beam_size=1`` it is exactly greedy decoding.
  """
  B, L = ids_BxL.shape
  K = beam_size
  ids0 = jnp.where(target_mask_BxL > 0, PAD, ids_BxL)
  ids = jnp.repeat(ids0[:, None], K, 1)                                    # (B, K, L)
  tm = jnp.repeat(target_mask_BxL[:, None], K, 1)
  score = jnp.where(jnp.arange(K)[None] == 0, 0.0, -jnp.inf) * jnp.ones((B, 1))  # (B, K)
  done = jnp.zeros((B, K), bool)
  length = jnp.zeros((B, K), jnp.float32)
  cached = (_Cached if cache else _FullForward)(model, params)

  def body(carry, i):
    ids, score, done, length, state = carry
    logits, state = cached.logits(state, ids.reshape(B * K, L), i)
    logp = jax.nn.log_softmax(logits, -1).reshape(B, K, -1)                 # (B, K, V)
    V = logp.shape[-1]
    # A finished beam continues with PAD at no cost, so it competes with its final score.
    pad_only = jnp.full((V,), -jnp.inf).at[PAD].set(0.0)
    logp = jnp.where(done[..., None], pad_only, logp)
    cand = (score[..., None] + logp).reshape(B, K * V)
    top_score, top = jax.lax.top_k(cand, K)                                 # (B, K)
    src_beam, tok = top // V, (top % V).astype(jnp.int32)
    take = lambda a: jnp.take_along_axis(a, src_beam.reshape(B, K, *([1] * (a.ndim - 2))), 1)
    new_ids = take(ids).at[:, :, i].set(tok)
    new_done, new_len = take(done), take(length)
    new_len = new_len + (~new_done).astype(jnp.float32)
    new_done = new_done | (tok == EOS)
    write = (target_mask_BxL[:, i] > 0)[:, None]                            # (B, 1)
    sel = lambda new, old: jnp.where(write.reshape(B, 1, *([1] * (new.ndim - 2))), new, old)
    # each kept beam continues from the cache of the beam it extends (rows not yet writing keep
    # their own, as their beams do)
    src_row = (jnp.arange(B)[:, None] * K + jnp.where(write, src_beam, jnp.arange(K)[None]))
    return (sel(new_ids, ids), sel(top_score, score), sel(new_done, done),
            sel(new_len, length), cached.reorder(state, src_row.reshape(B * K)))

  state = cached.start(ids.reshape(B * K, L), tm.reshape(B * K, L))
  ids, score, done, length, _ = _positions_loop(body, (ids, score, done, length, state),
                                                target_mask_BxL, lambda c: c[2])
  final = score / jnp.maximum(length, 1.0) ** alpha
  if nbest:
    return jnp.take_along_axis(ids, jnp.argsort(-final, -1)[..., None], 1)
  best = jnp.argmax(final, -1)
  return jnp.take_along_axis(ids, best[:, None, None], 1)[:, 0]
