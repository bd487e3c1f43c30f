"""Sharding on 8 fake CPU devices: golden partition specs, equal results on every mesh, resharding.

Data parallel, FSDP and tensor parallel differ only in ``config.mesh``; these tests pin the layout each
gives every parameter and check that the numbers do not depend on it.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import common
from diffusion_text import checkpointing, denoiser, generate, optim, sharding, train
from diffusion_text import train_state as ts
from diffusion_text.data import tokenizers

CFG = denoiser.ModelConfig(vocab_size=20, max_len=8, emb_dim=4, width=16, num_layers=2,
                           num_heads=4, mlp_dim=32, dropout=0.1)
DATA_FSDP = {"data": 2, "fsdp": 4, "tensor": 1}
DATA_TENSOR = {"data": 2, "fsdp": 1, "tensor": 4}

# The config's default rules: embed -> fsdp, mlp and heads -> tensor, vocab/latent/len/kv/layers
# replicated. Scanned blocks carry a leading (replicated) layers axis.
GOLDEN_SPECS = {
    "denoiser/blocks/attn_out/bias": P(None, "fsdp"),
    "denoiser/blocks/attn_out/kernel": P(None, "tensor", None, "fsdp"),
    "denoiser/blocks/key/bias": P(None, "tensor", None),
    "denoiser/blocks/key/kernel": P(None, "fsdp", "tensor", None),
    "denoiser/blocks/ln_attn/bias": P(None, "fsdp"),
    "denoiser/blocks/ln_attn/scale": P(None, "fsdp"),
    "denoiser/blocks/ln_mlp/bias": P(None, "fsdp"),
    "denoiser/blocks/ln_mlp/scale": P(None, "fsdp"),
    "denoiser/blocks/mlp_in/bias": P(None, "tensor"),
    "denoiser/blocks/mlp_in/kernel": P(None, "fsdp", "tensor"),
    "denoiser/blocks/mlp_out/bias": P(None, "fsdp"),
    "denoiser/blocks/mlp_out/kernel": P(None, "tensor", "fsdp"),
    "denoiser/blocks/query/bias": P(None, "tensor", None),
    "denoiser/blocks/query/kernel": P(None, "fsdp", "tensor", None),
    "denoiser/blocks/value/bias": P(None, "tensor", None),
    "denoiser/blocks/value/kernel": P(None, "fsdp", "tensor", None),
    "denoiser/in_proj/bias": P("fsdp"),
    "denoiser/in_proj/kernel": P(None, "fsdp"),
    "denoiser/ln_out/bias": P("fsdp"),
    "denoiser/ln_out/scale": P("fsdp"),
    "denoiser/out_proj/bias": P(None),
    "denoiser/out_proj/kernel": P("fsdp", None),
    "denoiser/pos_emb": P(None, "fsdp"),
    "denoiser/time_mlp_in/bias": P("tensor"),
    "denoiser/time_mlp_in/kernel": P("fsdp", "tensor"),
    "denoiser/time_mlp_out/bias": P("fsdp"),
    "denoiser/time_mlp_out/kernel": P("tensor", "fsdp"),
    "embedding": P(None, None),
}
# Per-device shard shapes of a few parameters: what the specs mean on each mesh.
GOLDEN_SHARDS = {
    "denoiser/blocks/mlp_in/kernel": {"shape": (2, 16, 32), "fsdp": (2, 4, 32),
                                      "tensor": (2, 16, 8)},
    "denoiser/blocks/attn_out/kernel": {"shape": (2, 4, 4, 16), "fsdp": (2, 4, 4, 4),
                                        "tensor": (2, 1, 4, 16)},
    "denoiser/pos_emb": {"shape": (8, 16), "fsdp": (8, 4), "tensor": (8, 16)},
    "embedding": {"shape": (20, 4), "fsdp": (20, 4), "tensor": (20, 4)},
}


def _config(mesh: dict, **model):
  c = common.get_config()
  c.mesh.update(mesh)
  c.model.update(emb_dim=CFG.emb_dim, width=CFG.width, num_layers=CFG.num_layers,
                 num_heads=CFG.num_heads, mlp_dim=CFG.mlp_dim, **model)
  c.data.max_len = CFG.max_len
  c.diffusion.num_steps = 50
  c.optim.update(learning_rate=1e-3, warmup_steps=0)
  return c


def _by_path(tree) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, P))[0]
  return {"/".join(k.key for k in path): v for path, v in flat}


@pytest.mark.parametrize("mesh", [DATA_FSDP, DATA_TENSOR], ids=["data_fsdp", "data_tensor"])
def test_golden_partition_specs(mesh):
  c = _config(mesh)
  m = sharding.make_mesh(c.mesh)
  tx = optim.make_optimizer(c.optim, 10)
  abstract, shardings = ts.state_shardings(denoiser.init_params, CFG, tx, m, sharding.axis_rules(c))
  specs = _by_path(jax.tree.map(lambda s: s.spec, shardings.params))
  assert specs == GOLDEN_SPECS
  shapes = _by_path(jax.tree.map(lambda a: a, abstract.params))
  kind = "fsdp" if mesh["fsdp"] > 1 else "tensor"
  for name, want in GOLDEN_SHARDS.items():
    assert shapes[name].shape == want["shape"]
    assert shapes[name].sharding.shard_shape(want["shape"]) == want[kind], name
  # Adam moments follow their parameters; the step count is replicated, not left on one device.
  opt_specs = [s.spec for s in jax.tree.leaves(shardings.opt_state)]
  assert P(None, "fsdp", "tensor") in opt_specs and P() in opt_specs


def _batch(seed: int, B: int = 16):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, CFG.vocab_size, (B, CFG.max_len)).astype(np.int32)
  ids[:, -2:] = tokenizers.PAD
  return {"ids": ids, "target_mask": np.ones_like(ids),
          "pad_mask": (ids == tokenizers.PAD).astype(np.int32)}


def _train(mesh_cfg: dict, steps: int = 3):
  c = _config(mesh_cfg)
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:int(np.prod(list(mesh_cfg.values())))])
  rules = sharding.axis_rules(c)
  # Plain SGD: Adam divides by sqrt(v) and so turns float32 reduction-order noise in exactly-zero
  # gradients (the attention key bias has one) into lr-sized differences.
  tx = optax.sgd(0.05)
  model = denoiser.DiffusionLM(CFG)
  state, shardings = ts.create_train_state(denoiser.init_params, CFG, tx, mesh, rules, seed=0)
  step = jax.jit(train.make_train_step(model, c, tx),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  losses = []
  with sharding.mesh_context(mesh, rules):
    for i in range(steps):
      state, sums = step(state, sharding.global_batch(_batch(i), mesh))
      losses.append(float(sums["loss"] / sums["count"]))
  return jax.device_get(state), losses


@pytest.fixture(scope="module")
def one_device():
  return _train({"data": 1, "fsdp": 1, "tensor": 1})


@pytest.mark.parametrize("mesh", [{"data": 8, "fsdp": 1, "tensor": 1}, DATA_FSDP, DATA_TENSOR],
                         ids=["data", "data_fsdp", "data_tensor"])
def test_train_steps_match_one_device(one_device, mesh):
  """Same losses and parameters on 8 devices (pure data parallel, FSDP, tensor) as on one, dropout
  included (partitionable threefry draws the same bits for any layout)."""
  if jax.device_count() < 8:
    pytest.fail("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  (s1, l1), (s8, l8) = one_device, _train(mesh)
  np.testing.assert_allclose(l8, l1, rtol=2e-6)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _make_run(mesh_cfg, words=None, **model):
  c = _config(mesh_cfg, self_cond=True, **model)
  c.data.task = "seq2seq"
  c.data.update(max_src_len=3, cut_sources=True)
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:int(np.prod(list(mesh_cfg.values())))])
  cfg = dataclasses.replace(CFG, self_cond=True, **model)
  params = nn.meta.unbox(denoiser.init_params(cfg, jax.random.PRNGKey(3)))
  _, shardings = ts.state_shardings(denoiser.init_params, cfg, optim.make_optimizer(c.optim, 10),
                                    mesh, sharding.axis_rules(c))
  params = jax.device_put(params, shardings.params)
  words = words or [f"w{i}" for i in range(CFG.vocab_size - len(tokenizers.SPECIALS))]
  tok = tokenizers.WordTokenizer(words)
  return generate.Run(workdir="", config=c, tokenizer=tok, model=denoiser.DiffusionLM(cfg),
                      params=params, step=0, mesh=mesh)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++2m"])
def test_sampling_on_8_devices_equals_1(sampler):
  srcs = [f"w{i} w{i + 1}" for i in range(16)]
  kw = dict(sources=srcs, sampler=sampler, steps=7, seed=5, batch_size=16)
  one = _make_run({"data": 1, "fsdp": 1, "tensor": 1}).generate_ids(**kw)
  eight = _make_run(DATA_FSDP).generate_ids(**kw)
  np.testing.assert_array_equal(one, eight)


def test_slot_guided_sampling_on_8_devices_equals_1():
  """Slot guidance's word groups are split over the batch axes with the ids: the same outputs on
  a 2 x 4 mesh as on one device, and not those of unguided sampling."""
  words = ["name", ":", "|", "Type", "pub", "area", "riverside", "river", "Aromi", "is", "a",
           "in", "the", "cheap", "."]
  srcs = ["name : Aromi | Type : pub | area : riverside"] * 8 + ["name : Aromi | area : riverside"] * 8
  kw = dict(sources=srcs, sampler="dpm++2m", steps=5, seed=2, batch_size=16)
  runs = [_make_run(m, words, x0_head="softmax") for m in ({"data": 1, "fsdp": 1, "tensor": 1},
                                                          DATA_FSDP)]
  for r in runs:  # the guided state itself is the output
    with r.config.unlocked():
      r.config.sample.rounding = "nearest"
  plain = runs[0].generate_ids(**kw)
  for r in runs:
    with r.config.unlocked():
      r.config.sample.slot_guidance = 3.0
  one, eight = (r.generate_ids(**kw) for r in runs)
  np.testing.assert_array_equal(one, eight)
  assert np.any(one != plain)


def test_checkpoint_restores_onto_another_mesh_bit_exactly(tmp_path):
  """Written from 2x4 (data x fsdp) on 8 devices; restored onto 2 devices as FSDP and as data
  parallel: every array identical, laid out as the new mesh says."""
  c = _config(DATA_FSDP)
  tx = optim.make_optimizer(c.optim, 10)
  rules = sharding.axis_rules(c)
  state, _ = ts.create_train_state(denoiser.init_params, CFG, tx, sharding.make_mesh(c.mesh),
                                   rules, seed=4)
  ck = checkpointing.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  ck.save(1, state, {"next_batch": 1}, force=True)
  ck.wait()
  want = jax.device_get(state)
  for mesh_cfg in ({"data": 1, "fsdp": 2, "tensor": 1}, {"data": 2, "fsdp": 1, "tensor": 1}):
    mesh = sharding.make_mesh(mesh_cfg, jax.devices()[:2])
    abstract, shardings = ts.state_shardings(denoiser.init_params, CFG, tx, mesh, rules)
    got, data_state = ck.restore(1, abstract)
    assert data_state == {"next_batch": 1}
    for a, b, s in zip(jax.tree.leaves(want), jax.tree.leaves(got), jax.tree.leaves(shardings)):
      np.testing.assert_array_equal(a, np.asarray(b))
      assert b.sharding == s and len(b.sharding.device_set) == 2
  ck.close()


def test_activation_constraints_only_under_mesh_context():
  """The residual stream is constrained to (act_batch, act_len, act_emb) when traced under
  ``mesh_context`` (once after the input, once per block), and untouched otherwise."""
  c = _config(DATA_FSDP)
  mesh = sharding.make_mesh(c.mesh)
  model = denoiser.DiffusionLM(dataclasses.replace(CFG, scan_layers=False))
  params_loop = nn.meta.unbox(denoiser.init_params(dataclasses.replace(CFG, scan_layers=False),
                                                   jax.random.PRNGKey(0)))
  f = lambda p, z: model.apply({"params": p}, z, jnp.ones((16,), jnp.int32))
  z = jnp.zeros((16, CFG.max_len, CFG.emb_dim))
  count = lambda: str(jax.make_jaxpr(f)(params_loop, z)).count("sharding_constraint")
  assert count() == 0
  with sharding.mesh_context(mesh, sharding.axis_rules(c)):
    text = str(jax.make_jaxpr(f)(params_loop, z))
  assert text.count("sharding_constraint") == 1 + CFG.num_layers
  assert "P(('data', 'fsdp'), None, None)" in text
