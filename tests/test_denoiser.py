import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion_text import denoiser

CFG = denoiser.ModelConfig(vocab_size=20, max_len=8, emb_dim=4, width=16, num_layers=2,
                           num_heads=2, mlp_dim=32, dropout=0.1)


@pytest.mark.parametrize("scan", [True, False])
def test_shapes_and_logical_names(scan):
  cfg = denoiser.ModelConfig(**{**CFG.__dict__, "scan_layers": scan})
  boxed = denoiser.init_params(cfg, jax.random.PRNGKey(0))
  from jax.sharding import PartitionSpec
  specs = jax.tree.leaves(nn.get_partition_spec(boxed),
                          is_leaf=lambda x: isinstance(x, PartitionSpec))
  leaves = jax.tree.leaves(nn.meta.unbox(boxed))
  assert len(specs) == len(leaves)
  # every parameter is annotated: no leaf falls back to an empty (unannotated) spec
  assert all(len(s) == p.ndim for s, p in zip(specs, leaves))
  params = nn.meta.unbox(boxed)
  assert params["embedding"].shape == (20, 4)
  model = denoiser.DiffusionLM(cfg)
  z = jnp.ones((3, 8, 4))
  out = model.apply({"params": params}, z, jnp.array([1, 5, 9]))
  assert out.shape == (3, 8, 4) and out.dtype == jnp.float32


def test_scan_and_loop_have_same_parameter_count():
  n = lambda scan: sum(x.size for x in jax.tree.leaves(nn.meta.unbox(denoiser.init_params(
      denoiser.ModelConfig(**{**CFG.__dict__, "scan_layers": scan}), jax.random.PRNGKey(0)))))
  assert n(True) == n(False)


def test_output_depends_on_timestep_and_dropout_only_in_training():
  params = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(1)))
  model = denoiser.DiffusionLM(CFG)
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 4))
  a = model.apply({"params": params}, z, jnp.array([1, 1]))
  b = model.apply({"params": params}, z, jnp.array([900, 900]))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, model.apply({"params": params}, z, jnp.array([1, 1])))
  d1 = model.apply({"params": params}, z, jnp.array([1, 1]), deterministic=False,
                   rngs={"dropout": jax.random.PRNGKey(3)})
  assert not np.allclose(a, d1)


def test_self_conditioning_input():
  """With self_cond the input projection reads [z_t; x_sc] (2E rows); x_sc=None means zeros; a model
  without self_cond ignores x_sc."""
  cfg = denoiser.ModelConfig(**{**CFG.__dict__, "self_cond": True})
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(4)))
  assert params["denoiser"]["in_proj"]["kernel"].shape == (8, 16)
  model = denoiser.DiffusionLM(cfg)
  z = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 4))
  t = jnp.array([3, 700])
  plain = model.apply({"params": params}, z, t)
  np.testing.assert_array_equal(plain, model.apply({"params": params}, z, t, jnp.zeros_like(z)))
  assert not np.allclose(plain, model.apply({"params": params}, z, t, z))
  base = denoiser.DiffusionLM(CFG)
  p0 = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(4)))
  np.testing.assert_array_equal(base.apply({"params": p0}, z, t),
                                base.apply({"params": p0}, z, t, z))


def test_absorbing_embedding_is_a_parameter_only_when_enabled():
  on = nn.meta.unbox(denoiser.init_params(
      denoiser.ModelConfig(**{**CFG.__dict__, "absorbing": True}), jax.random.PRNGKey(6)))
  off = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(6)))
  assert on["absorbing"].shape == (4,) and "absorbing" not in off


def test_softmax_x0_head_is_the_expected_embedding_under_its_logits():
  """x0_head=softmax: x0_hat = softmax(h . EMB^T) EMB, inside the embeddings' convex hull, and the
  returned logits are the tied rounding logits of the same h as the linear head's output."""
  soft_cfg = denoiser.ModelConfig(**{**CFG.__dict__, "x0_head": "softmax"})
  params = nn.meta.unbox(denoiser.init_params(soft_cfg, jax.random.PRNGKey(7)))
  z = jax.random.normal(jax.random.PRNGKey(8), (2, 8, 4))
  t = jnp.array([3, 700])
  x0, logits = denoiser.DiffusionLM(soft_cfg).apply({"params": params}, z, t, return_logits=True)
  h = denoiser.DiffusionLM(CFG).apply({"params": params}, z, t)  # same params, linear head
  emb = params["embedding"]
  np.testing.assert_allclose(logits, jnp.einsum("ble,ve->blv", h, emb), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(x0, jax.nn.softmax(logits) @ emb, rtol=1e-5, atol=1e-5)
  assert np.all(np.abs(np.asarray(x0)) <= np.abs(np.asarray(emb)).max(0) + 1e-6)


def test_logit_temperature_sharpens_the_softmax_estimate_toward_its_top_word():
  """decoding.denoiser_of(logit_temp=...): 1 is the model's own x0_hat; 2 reads softmax(logits / 2)
  EMB; near 0 each position's estimate is the embedding of its argmax word. A linear head has no
  logits to temper: refused."""
  from diffusion_text import decoding
  soft_cfg = denoiser.ModelConfig(**{**CFG.__dict__, "x0_head": "softmax"})
  model = denoiser.DiffusionLM(soft_cfg)
  params = nn.meta.unbox(denoiser.init_params(soft_cfg, jax.random.PRNGKey(7)))
  emb = params["embedding"]
  z = 3.0 * jax.random.normal(jax.random.PRNGKey(8), (2, 8, 4))
  t, x_sc = jnp.array([3, 700]), jnp.zeros((2, 8, 4))
  x0, logits = model.apply({"params": params}, z, t, x_sc, return_logits=True)
  plain = decoding.denoiser_of(model, params, logit_temp=1.0, emb_VxE=emb)(z, t, x_sc)
  np.testing.assert_array_equal(plain, x0)
  warm = decoding.denoiser_of(model, params, logit_temp=2.0, emb_VxE=emb)(z, t, x_sc)
  np.testing.assert_allclose(warm, jax.nn.softmax(logits / 2.0) @ emb, rtol=1e-5, atol=1e-6)
  cold = decoding.denoiser_of(model, params, logit_temp=1e-6, emb_VxE=emb)(z, t, x_sc)
  np.testing.assert_allclose(cold, emb[jnp.argmax(logits, -1)], rtol=1e-5, atol=1e-6)
  assert not np.allclose(cold, x0, atol=1e-3)
  with pytest.raises(ValueError, match="softmax x0 head"):
    decoding.denoiser_of(denoiser.DiffusionLM(CFG), params, logit_temp=0.5, emb_VxE=emb)
  with pytest.raises(ValueError, match="logit_temp must be > 0"):
    decoding.denoiser_of(model, params, logit_temp=0.0, emb_VxE=emb)


def test_layout_conversion_is_exact_both_ways():
  """Unrolled parameters stacked into the scanned layout give the scanned model the same outputs,
  and splitting them back gives the very same tree (also inside a larger tree, e.g. Adam moments)."""
  unrolled_cfg = denoiser.ModelConfig(**{**CFG.__dict__, "scan_layers": False, "dropout": 0.0})
  scan_cfg = denoiser.ModelConfig(**{**CFG.__dict__, "scan_layers": True, "dropout": 0.0})
  params = nn.meta.unbox(denoiser.init_params(unrolled_cfg, jax.random.PRNGKey(3)))
  stacked = denoiser.convert_layout(params, True, CFG.num_layers)
  want = jax.tree.map(lambda x: x.shape, nn.meta.unbox(denoiser.init_params(scan_cfg,
                                                                           jax.random.PRNGKey(0))))
  assert jax.tree.map(lambda x: x.shape, stacked) == want
  z, t = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 4)), jnp.array([0, 5, 9])
  np.testing.assert_allclose(denoiser.DiffusionLM(scan_cfg).apply({"params": stacked}, z, t),
                             denoiser.DiffusionLM(unrolled_cfg).apply({"params": params}, z, t),
                             rtol=1e-5, atol=1e-6)
  assert denoiser.scan_layers_of(params) is False and denoiser.scan_layers_of(stacked) is True
  assert denoiser.scan_layers_of({"embedding": params["embedding"]}) is None
  tree = {"step": 7, "moments": (params, params)}
  back = denoiser.convert_layout(denoiser.convert_layout(tree, True, CFG.num_layers), False,
                                 CFG.num_layers)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  assert denoiser.scan_layers_of((7, denoiser.convert_layout(tree, True, CFG.num_layers))) is True
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
    np.testing.assert_array_equal(a, b)
  # a tree already in the wanted layout is unchanged
  assert jax.tree.structure(denoiser.convert_layout(stacked, True, CFG.num_layers)) == \
      jax.tree.structure(stacked)


def test_rotary_scores_depend_on_the_offset_only_and_keep_norms():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 2, 8))
  score = lambda m, n: jnp.sum(denoiser.rotary(q, jnp.array([m])) * denoiser.rotary(k, jnp.array([n])), -1)
  np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(score(0, 0), jnp.sum(q * k, -1), rtol=1e-6)
  assert not np.allclose(score(3, 1), score(1, 3))
  np.testing.assert_allclose(jnp.linalg.norm(denoiser.rotary(q, jnp.array([7])), axis=-1),
                             jnp.linalg.norm(q, axis=-1), rtol=1e-6)


def test_rope_adds_no_parameters_and_tells_apart_words_the_tables_cannot():
  """With the learned position table at zero, a plain Transformer is permutation-equivariant: the
  same word at two positions gets the same output. Rotary embeddings alone break that."""
  cfg = denoiser.ModelConfig(**{**CFG.__dict__, "rope": True, "dropout": 0.0})
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(1)))
  plain = nn.meta.unbox(denoiser.init_params(
      denoiser.ModelConfig(**{**CFG.__dict__, "dropout": 0.0}), jax.random.PRNGKey(1)))
  assert jax.tree.structure(params) == jax.tree.structure(plain)
  params["denoiser"]["pos_emb"] = jnp.zeros_like(params["denoiser"]["pos_emb"])
  z = jax.random.normal(jax.random.PRNGKey(2), (1, 8, 4))
  z = z.at[0, 5].set(z[0, 2])  # one vector at positions 2 and 5
  t = jnp.array([500])
  out = lambda c: denoiser.DiffusionLM(c).apply({"params": params}, z, t)
  np.testing.assert_allclose(out(CFG)[0, 2], out(CFG)[0, 5], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out(cfg)[0, 2], out(cfg)[0, 5], atol=1e-4)
