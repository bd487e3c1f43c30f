"""The recipe levers: embedding normalisation, the full word head, rounding by logits, the CFG null
branch, one-step accuracy and per-quarter loss instruments."""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diffusion_text import control, decoding, denoiser, embeddings, process, samplers, train

CFG = denoiser.ModelConfig(vocab_size=20, max_len=8, emb_dim=4, width=16, num_layers=2,
                           num_heads=2, mlp_dim=32, dropout=0.0)
DIFF = process.Diffusion("sqrt", 50)


def _cfg(**kw):
  return denoiser.ModelConfig(**{**CFG.__dict__, **kw})


def _config(**model):
  """The config keys ``decoding`` reads."""
  m = {"x0_head": "linear", "logits_head": "tied", "emb_norm": "none", "emb_scale": 1.0, **model}
  return ml_collections.ConfigDict({"model": m})


def test_emb_norm_fixes_the_rms_and_keeps_rounding_exact():
  emb = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (30, 8)) + 0.5
  l2 = embeddings.normalize(emb, "l2")
  np.testing.assert_allclose(jnp.linalg.norm(l2, axis=-1), np.sqrt(8), rtol=1e-5)
  ln = embeddings.normalize(emb, "layernorm")
  np.testing.assert_allclose(jnp.mean(ln, -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.mean(ln**2, -1), 1.0, rtol=1e-4)
  np.testing.assert_array_equal(embeddings.normalize(emb, "none"), emb)
  half = embeddings.normalize(emb, "l2", 0.5)  # emb_scale 1/F: Difformer's noise factor F = 2
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(half**2, -1)), 0.5, rtol=1e-5)
  ids = jnp.arange(30)[None]
  for table in (l2, ln):
    np.testing.assert_array_equal(embeddings.round_to_ids(table, embeddings.embed(table, ids)), ids)
  with pytest.raises(ValueError, match="emb_norm"):
    embeddings.normalize(emb, "rms")


def test_model_reads_the_normalised_table():
  """With emb_norm the softmax head averages the normalised rows, and the tied logits use them."""
  cfg = _cfg(x0_head="softmax", emb_norm="l2")
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(1)))
  params["embedding"] = params["embedding"] * 5.0  # far from the normalised scale
  z, t = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 4)), jnp.array([3, 40])
  x0, logits = denoiser.DiffusionLM(cfg).apply({"params": params}, z, t, return_logits=True)
  table = embeddings.table(params, cfg)
  np.testing.assert_allclose(x0, jax.nn.softmax(logits) @ table, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.linalg.norm(x0, axis=-1))) <= np.sqrt(4) + 1e-4


def test_full_logits_head_is_a_dense_on_the_trunk():
  cfg = _cfg(logits_head="full", x0_head="softmax")
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(3)))
  assert params["denoiser"]["logits_head"]["kernel"].shape == (16, 20)  # D x V: rank D, not E
  z, t = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 4)), jnp.array([3, 40])
  x0, logits = denoiser.DiffusionLM(cfg).apply({"params": params}, z, t, return_logits=True)
  assert logits.shape == (2, 8, 20)
  np.testing.assert_allclose(x0, jax.nn.softmax(logits) @ params["embedding"], rtol=1e-5,
                             atol=1e-5)
  # the linear x0 head with a full word head: x0_hat is the regression output, logits separate
  lin = _cfg(logits_head="full")
  h, lg = denoiser.DiffusionLM(lin).apply({"params": params}, z, t, return_logits=True)
  np.testing.assert_allclose(lg, logits, rtol=1e-6)
  np.testing.assert_array_equal(h, denoiser.DiffusionLM(lin).apply({"params": params}, z, t))


def test_rounding_uses_the_logits_when_the_model_has_them():
  cfg = _cfg(logits_head="full", x0_head="softmax")
  model = denoiser.DiffusionLM(cfg)
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(5)))
  x0 = jax.random.normal(jax.random.PRNGKey(6), (2, 8, 4))
  ids, mask = jnp.full((2, 8), 7), jnp.array([[0, 0, 1, 1, 1, 1, 1, 1]] * 2)
  got = decoding.round_ids(model, params, _config(logits_head="full", x0_head="softmax"), x0,
                           ids, mask)
  _, logits = model.apply({"params": params}, x0, jnp.ones((2,), jnp.int32), x0,
                          return_logits=True)
  want = jnp.where(mask > 0, jnp.argmax(logits, -1), ids)
  np.testing.assert_array_equal(got, want)
  nearest = decoding.round_ids(model, params, _config(), x0, ids, mask)  # no logits: nearest row
  np.testing.assert_array_equal(
      nearest, jnp.where(mask > 0, embeddings.round_to_ids(params["embedding"], x0), ids))
  # rounding="nearest" skips the logits even where the model has them (one denoiser call fewer)
  config = _config(logits_head="full", x0_head="softmax")
  fast = decoding.round_ids(model, params, config, x0, ids, mask, rounding="nearest")
  np.testing.assert_array_equal(fast, nearest)
  assert not np.array_equal(fast, got)  # the two roundings differ off the embeddings
  with pytest.raises(ValueError, match="unknown rounding 'argmax'"):
    decoding.round_ids(model, params, config, x0, ids, mask, rounding="argmax")


def test_encoder_decoder_rounds_with_the_source_encoded_once():
  """The rounding call of an encoder-decoder reads the source encoded once (``memory``), as each
  sampler step does: the same words as encoding it again, without the encoder's cost."""
  S = 3
  cfg = _cfg(src_len=S, self_cond=True, x0_head="softmax", logits_head="full")
  model = denoiser.DiffusionLM(cfg)
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(7)))
  x0 = jax.random.normal(jax.random.PRNGKey(8), (2, 8, 4))
  ids, mask = jnp.full((2, 8), 5), jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]] * 2)
  config = _config(logits_head="full", x0_head="softmax")
  memory = denoiser.encode_source(cfg, params, x0[:, :S])
  with_memory = decoding.round_ids(model, params, config, x0, ids, mask, memory=memory)
  np.testing.assert_array_equal(with_memory, decoding.round_ids(model, params, config, x0, ids,
                                                                mask))
  other = decoding.round_ids(model, params, config, x0, ids, mask, memory=memory + 1.0)
  assert not np.array_equal(other, with_memory)  # the memory is what the call reads


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++2m"])
def test_cfg_null_branch_never_sees_the_source(sampler):
  """Guidance scale 0 is the null model alone: the sampled target must not depend on the source at
  any step. The sampler re-anchors its carried x0 estimate (the self-conditioning input) to the
  real source, so the null branch must replace it there too."""
  cfg = _cfg(self_cond=True)
  model = denoiser.DiffusionLM(cfg)
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(7)))
  emb = params["embedding"]
  mask = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1]])

  def sample(src, scale):
    ids = jnp.array([[2, src, src + 1, 4, 0, 0, 0, 0]])
    denoise = control.cfg_denoiser(decoding.denoiser_of(model, params), emb, ids, mask, scale)
    x_cond = embeddings.embed(emb, ids)
    return samplers.sample(denoise, emb, DIFF, jax.random.PRNGKey(8), shape=x_cond.shape, steps=6,
                           sampler=sampler, x_cond_BxLxE=x_cond, mask_BxL=mask)[:, 4:]

  np.testing.assert_allclose(sample(10, 0.0), sample(13, 0.0), rtol=1e-6, atol=1e-6)
  # the conditional model (scale 1) does read the source, so the check above can fail
  assert not np.allclose(sample(10, 1.0), sample(13, 1.0), atol=1e-3)


def test_one_step_accuracy_counts_target_words_only():
  ids = jnp.array([[2, 10, 11, 12, 3, 0, 0, 0]])
  mask = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1]])
  pad = (ids == 0).astype(jnp.int32)
  emb = jax.random.normal(jax.random.PRNGKey(9), (20, 4))
  right = embeddings.embed(emb, ids)
  half = right.at[:, 3].set(embeddings.embed(emb, jnp.array([[15]]))[:, 0])  # position 3 wrong

  def oracle(x0):
    return types.SimpleNamespace(apply=lambda variables, z, t, x_sc, **_: x0)

  for x0, want in ((right, 1.0), (half, 2 / 3)):
    out = decoding.one_step_accuracy(oracle(x0), {"embedding": emb}, _config(), DIFF,
                                     jax.random.PRNGKey(0), ids, mask, pad, (0.5, 1.0))
    assert sorted(out) == ["token_acc_t25", "token_acc_t50"]
    for correct, words in out.values():
      assert int(words) == 3  # 11, 12 and EOS; PAD and the source are not counted
      np.testing.assert_allclose(float(correct) / float(words), want)


def test_mean_of_sums_averages_a_term_over_its_own_count():
  acc = [{"loss": 6.0, "count": 3.0, "loss_q0": 2.0, "loss_q0_count": 1.0, "loss_q1": 0.0,
          "loss_q1_count": 0.0},
         {"loss": 2.0, "count": 1.0, "loss_q0": 4.0, "loss_q0_count": 1.0, "loss_q1": 0.0,
          "loss_q1_count": 0.0}]
  out = train._mean_of_sums(acc)
  assert out == {"loss": 2.0, "loss_q0": 3.0}  # no example drew q1: no value rather than 0


@pytest.mark.parametrize("scan", [True, False])
def test_encoder_decoder_reads_the_source_through_its_encoder_only(scan):
  """``model.arch=encoder_decoder`` (src_len S): the first S positions are encoded once, with no
  noise and no t, and the target positions cross-attend to them. So the target's estimate depends on
  the source and on every target position, the source positions' outputs are zeros whatever the
  input, and self-conditioning is read at the target positions only."""
  S = 3
  cfg = _cfg(src_len=S, scan_layers=scan, self_cond=True)
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(0)))
  assert set(params["denoiser"]) >= {"encoder", "in_proj", "pos_emb", "ln_out"}
  enc = params["denoiser"]["encoder"]
  assert enc["pos_emb"].shape == (S, 16) and enc["in_proj"]["kernel"].shape == (4, 16)
  model = denoiser.DiffusionLM(cfg)
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 4))
  t = jnp.array([5, 40])
  out = model.apply({"params": params}, z, t)
  np.testing.assert_array_equal(out[:, :S], np.zeros((2, S, 4)))
  _, logits = model.apply({"params": params}, z, t, return_logits=True)
  np.testing.assert_array_equal(logits[:, :S], 0.0)
  other_src = z.at[:, 1].add(1.0)
  assert not np.allclose(model.apply({"params": params}, other_src, t)[:, S:], out[:, S:])
  other_tgt = z.at[:, -1].add(1.0)
  changed = model.apply({"params": params}, other_tgt, t)
  assert not np.allclose(changed[:, S:-1], out[:, S:-1])  # the decoder is bidirectional
  # self-conditioning is read at the target positions only
  x_sc = jax.random.normal(jax.random.PRNGKey(2), z.shape)
  a = model.apply({"params": params}, z, t, x_sc)
  b = model.apply({"params": params}, z, t, x_sc.at[:, :S].set(0.0))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, model.apply({"params": params}, z, t, x_sc.at[:, S:].set(0.0)))


def test_encoder_decoder_converts_between_block_layouts_exactly():
  """Scanned and unrolled encoder-decoder parameters are the same model (``convert_layout``)."""
  scanned, unrolled = _cfg(src_len=3, scan_layers=True), _cfg(src_len=3, scan_layers=False)
  params = nn.meta.unbox(denoiser.init_params(scanned, jax.random.PRNGKey(3)))
  assert "blocks" in params["denoiser"] and "blocks" in params["denoiser"]["encoder"]
  converted = denoiser.convert_layout(params, False, 2)
  assert "block_1" in converted["denoiser"] and "block_1" in converted["denoiser"]["encoder"]
  assert "cross_key" in converted["denoiser"]["block_0"]
  z = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 4))
  t = jnp.array([1, 30])
  np.testing.assert_allclose(denoiser.DiffusionLM(unrolled).apply({"params": converted}, z, t),
                             denoiser.DiffusionLM(scanned).apply({"params": params}, z, t),
                             rtol=1e-5, atol=1e-6)


def test_shared_positions_are_one_table_read_one_row_apart():
  """``model.positions=shared``: the encoder reads rows 0..S-1 of one table and the decoder rows
  1..L-S, so target index k starts from the vector of source region index k + 1 (source token k under
  ``data.target_start=aligned``): the same model as separate tables holding those rows."""
  S = 3
  shared, separate = _cfg(src_len=S, positions="shared"), _cfg(src_len=S)
  p_sh = nn.meta.unbox(denoiser.init_params(shared, jax.random.PRNGKey(5)))
  p_sep = nn.meta.unbox(denoiser.init_params(separate, jax.random.PRNGKey(5)))
  table = p_sh["denoiser"]["pos_emb_shared"]
  assert table.shape == (8, 16)
  assert "pos_emb" not in p_sh["denoiser"] and "pos_emb" not in p_sh["denoiser"]["encoder"]
  # the separate model with the shared table's rows copied in computes the same function
  p_sep["denoiser"]["encoder"]["pos_emb"] = table[:S]
  p_sep["denoiser"]["pos_emb"] = jnp.zeros((8, 16)).at[: 8 - 1].set(table[1:])
  for k in p_sh["denoiser"]:
    if k not in ("pos_emb_shared", "encoder"):
      p_sep["denoiser"][k] = p_sh["denoiser"][k]
  for k in p_sh["denoiser"]["encoder"]:
    p_sep["denoiser"]["encoder"][k] = p_sh["denoiser"]["encoder"][k]
  p_sep["embedding"] = p_sh["embedding"]
  z = jax.random.normal(jax.random.PRNGKey(6), (2, 8, 4))
  t = jnp.array([3, 44])
  np.testing.assert_allclose(denoiser.DiffusionLM(shared).apply({"params": p_sh}, z, t),
                             denoiser.DiffusionLM(separate).apply({"params": p_sep}, z, t),
                             rtol=1e-5, atol=1e-6)
