import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import denoiser
from diffusion_text.baselines import ar
from diffusion_text.data import packing

CFG = denoiser.ModelConfig(vocab_size=30, max_len=12, emb_dim=4, width=16, num_layers=2,
                           num_heads=2, mlp_dim=32, dropout=0.0)
MODEL = ar.ARTransformer(CFG)
PARAMS = nn.meta.unbox(ar.init_params(CFG, jax.random.PRNGKey(0)))


def _batch():
  rows = [packing.pack_source([10, 11, 12], 12, 5), packing.pack_source([13, 14], 12, 5),
          packing.pack_source([15, 16, 17, 18, 19], 12, 5)]
  return jnp.asarray(np.stack([r[0] for r in rows])), jnp.asarray(np.stack([r[1] for r in rows]))


def test_prefix_lm_mask():
  tm = jnp.array([[0, 0, 0, 1, 1]])
  m = np.asarray(ar.prefix_lm_mask(tm))[0, 0]
  assert m[0, 2]          # a source position sees later source positions
  assert not m[0, 3]      # ... but never the target
  assert m[3, 0] and m[3, 3] and not m[3, 4]  # the target sees the source and earlier targets


def test_logits_are_causal_in_the_target():
  ids, tm = _batch()
  ids = ids.at[:, 6].set(20)
  a = MODEL.apply({"params": PARAMS}, ids, tm)
  b = MODEL.apply({"params": PARAMS}, ids.at[:, 8:].set(21), tm)
  np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)
  assert not np.allclose(a[:, 8:], b[:, 8:])


def test_token_nll_counts_only_target_positions():
  ids, tm = _batch()
  logits = MODEL.apply({"params": PARAMS}, ids, tm)
  pad = (ids == 0).astype(jnp.int32)
  nll, w = ar.token_nll(logits, ids, tm, pad, loss_on_pad=True)
  logp = jax.nn.log_softmax(logits[0, :-1])
  pos = np.nonzero(np.asarray(tm[0, 1:]))[0]
  want = -np.mean([float(logp[p, ids[0, p + 1]]) for p in pos])
  np.testing.assert_allclose(nll[0], want, rtol=1e-5)
  assert np.all(w == 1)


def test_beam_one_equals_greedy_and_source_is_kept():
  ids, tm = _batch()
  g = ar.greedy_decode(MODEL, PARAMS, ids, tm)
  b1 = ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=1)
  np.testing.assert_array_equal(g, b1)
  np.testing.assert_array_equal(np.asarray(g)[np.asarray(tm) == 0], np.asarray(ids)[np.asarray(tm) == 0])
  b3 = ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=3)
  assert b3.shape == ids.shape


def _seq_logp(out, tm):
  """log p(target | source) of output rows, up to and including the target's first EOS."""
  logits = MODEL.apply({"params": PARAMS}, out, tm)
  logp = jax.nn.log_softmax(logits[:, :-1])
  tok = jnp.take_along_axis(logp, out[:, 1:, None], -1)[..., 0]
  after_eos = jnp.cumsum(jnp.cumsum(out[:, 1:] == 3, -1), -1) > 1
  return np.asarray(jnp.sum(jnp.where((tm[:, 1:] > 0) & ~after_eos, tok, 0.0), -1))


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy():
  ids, tm = _batch()
  g = _seq_logp(ar.greedy_decode(MODEL, PARAMS, ids, tm), tm)
  b = _seq_logp(ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=4), tm)
  assert np.all(b >= g - 1e-4)


def test_nbest_lists_every_beam_best_first():
  ids, tm = _batch()
  k = 4
  nbest = np.asarray(ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=k, nbest=True))
  assert nbest.shape == (ids.shape[0], k, ids.shape[1])
  np.testing.assert_array_equal(nbest[:, 0], ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=k))
  for b in range(ids.shape[0]):
    assert len({tuple(r) for r in nbest[b]}) == k  # k distinct hypotheses
    logp = _seq_logp(jnp.asarray(nbest[b]), jnp.repeat(tm[b:b + 1], k, 0))
    assert np.all(np.diff(logp) <= 1e-4), logp  # alpha 0: ranked by log-probability


def _naive_greedy(ids, tm):
  """Reference: every position 1..L-1 in Python, argmax of a full forward, PAD after EOS."""
  ids, tm = np.asarray(ids).copy(), np.asarray(tm)
  ids[tm > 0] = 0
  done = np.zeros(len(ids), bool)
  for i in range(1, ids.shape[1]):
    nxt = np.argmax(np.asarray(MODEL.apply({"params": PARAMS}, jnp.asarray(ids), tm))[:, i - 1], -1)
    for b in range(len(ids)):
      if tm[b, i]:
        ids[b, i] = 0 if done[b] else nxt[b]
        done[b] |= ids[b, i] == 3
  return ids


def test_greedy_matches_a_naive_loop_in_both_layouts():
  for target_start in packing.SOURCE_REGION_STARTS:
    rows = [packing.pack_source(s, 12, 5, target_start) for s in ([10, 11, 12], [13], [15, 16])]
    ids, tm = (jnp.asarray(np.stack([r[k] for r in rows])) for k in (0, 1))
    np.testing.assert_array_equal(ar.greedy_decode(MODEL, PARAMS, ids, tm), _naive_greedy(ids, tm))


def test_positions_loop_starts_at_the_first_target_and_stops_when_all_rows_are_done():
  tm = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]])
  finish_B = jnp.array([5, 6])  # row b is done after position finish_B[b]

  def body(carry, i):
    visited, done = carry
    return visited.at[i].set(1), done | (i >= finish_B)

  visited, _ = ar._positions_loop(body, (jnp.zeros(10, jnp.int32), jnp.zeros(2, bool)), tm,
                                  lambda c: c[1])
  np.testing.assert_array_equal(visited, [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])


def test_cached_logits_equal_a_full_forward_at_every_target_position():
  """Teacher-forcing a whole sequence through the key/value cache gives, at every position, the
  logits of a full forward on the sequence (both packing layouts, rows with targets starting at
  different positions)."""
  for target_start in packing.SOURCE_REGION_STARTS:
    rows = [packing.pack_source(s, 12, 5, target_start) for s in ([10, 11, 12], [13], [15, 16])]
    ids0, tm = (jnp.asarray(np.stack([r[k] for r in rows])) for k in (0, 1))
    filled = jnp.where(tm > 0, jax.random.randint(jax.random.PRNGKey(1), ids0.shape, 4, 30), ids0)
    full = MODEL.apply({"params": PARAMS}, filled, tm)
    cached = ar._Cached(MODEL, PARAMS)
    state = cached.start(jnp.where(tm > 0, 0, ids0), tm)
    for i in range(int(ar._first_target(tm)), 12):
      logits, state = cached.logits(state, filled, i)
      np.testing.assert_allclose(logits, full[:, i - 1], rtol=1e-4, atol=1e-4)


def test_cached_beam_search_equals_beam_search_on_full_forwards():
  for target_start in packing.SOURCE_REGION_STARTS:
    rows = [packing.pack_source(s, 12, 5, target_start) for s in ([10, 11, 12], [13], [15, 16])]
    ids, tm = (jnp.asarray(np.stack([r[k] for r in rows])) for k in (0, 1))
    np.testing.assert_array_equal(ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=3),
                                  ar.beam_decode(MODEL, PARAMS, ids, tm, beam_size=3, cache=False))


def test_sampling_draws_the_first_token_from_the_tempered_softmax():
  """Ancestral sampling: over many copies of one input, the first target token's frequencies match
  softmax(logits / temperature); a near-zero temperature is greedy decoding; the source is kept and
  every position after EOS is PAD."""
  ids, tm = _batch()
  n = 4000
  rows_ids, rows_tm = jnp.repeat(ids[:1], n, 0), jnp.repeat(tm[:1], n, 0)
  first = int(np.argmax(np.asarray(tm[0])))
  start = jnp.where(tm[:1] > 0, 0, ids[:1])
  logits = MODEL.apply({"params": PARAMS}, start, tm[:1])[0, first - 1]
  # this random-init model's logits are nearly flat: low temperatures give distributions far from
  # both uniform and one-hot (top probability 0.13 at 0.1, 0.32 at 0.05)
  for temperature in (0.1, 0.05):
    out = np.asarray(ar.sample_decode(MODEL, PARAMS, rows_ids, rows_tm, jax.random.PRNGKey(1),
                                      temperature))
    freq = np.bincount(out[:, first], minlength=CFG.vocab_size) / n
    want = np.asarray(jax.nn.softmax(logits / temperature))
    tol = 4.5 * np.sqrt(want * (1 - want) / n) + 1e-3  # binomial standard errors
    assert np.all(np.abs(freq - want) <= tol), (freq, want)
    assert np.abs(freq - 1 / CFG.vocab_size).max() > 0.05 and freq.max() < 0.5
    np.testing.assert_array_equal(out[:, :first], np.asarray(rows_ids)[:, :first])
    for row in out[:50]:
      eos = np.nonzero(row[first:] == ar.EOS)[0]
      if len(eos):
        assert np.all(row[first + eos[0] + 1:] == ar.PAD)
  cold = ar.sample_decode(MODEL, PARAMS, ids, tm, jax.random.PRNGKey(2), 1e-4)
  np.testing.assert_array_equal(cold, ar.greedy_decode(MODEL, PARAMS, ids, tm))


def test_cached_logits_equal_a_full_forward_with_rotary_positions():
  """The cache writes each key rotated at its own position, so with ``rope`` the incremental logits
  still equal a full forward's."""
  import dataclasses
  model = ar.ARTransformer(dataclasses.replace(CFG, rope=True))
  params = nn.meta.unbox(ar.init_params(model.cfg, jax.random.PRNGKey(0)))
  rows = [packing.pack_source(s, 12, 5) for s in ([10, 11, 12], [13], [15, 16])]
  ids0, tm = (jnp.asarray(np.stack([r[k] for r in rows])) for k in (0, 1))
  filled = jnp.where(tm > 0, jax.random.randint(jax.random.PRNGKey(1), ids0.shape, 4, 30), ids0)
  full = model.apply({"params": params}, filled, tm)
  assert not np.allclose(full, MODEL.apply({"params": params}, filled, tm), atol=1e-4)
  cached = ar._Cached(model, params)
  state = cached.start(jnp.where(tm > 0, 0, ids0), tm)
  for i in range(int(ar._first_target(tm)), 12):
    logits, state = cached.logits(state, filled, i)
    np.testing.assert_allclose(logits, full[:, i - 1], rtol=1e-4, atol=1e-4)
