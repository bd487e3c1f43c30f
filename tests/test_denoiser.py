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
