import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings


def _table(V=50, E=16, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (V, E))


def test_round_embed_is_identity():
  emb = _table()
  ids = jax.random.randint(jax.random.PRNGKey(1), (4, 12), 0, 50)
  np.testing.assert_array_equal(embeddings.round_to_ids(emb, embeddings.embed(emb, ids)), ids)


def test_round_is_nearest_in_l2():
  emb = _table(V=30, E=4)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 4))
  d = jnp.sum((x[:, :, None, :] - emb[None, None]) ** 2, -1)
  np.testing.assert_array_equal(embeddings.round_to_ids(emb, x), jnp.argmin(d, -1))


def test_clamp_is_idempotent_and_lands_on_table():
  emb = _table()
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (3, 9, 16))
  c = embeddings.clamp(emb, x)
  np.testing.assert_array_equal(embeddings.clamp(emb, c), c)
  ids = embeddings.round_to_ids(emb, x)
  np.testing.assert_array_equal(c, emb[ids])


def test_token_nll_is_tied_softmax():
  emb = _table(V=10, E=3)
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 3))
  ids = jax.random.randint(jax.random.PRNGKey(5), (2, 5), 0, 10)
  logits = np.einsum("ble,ve->blv", np.asarray(x), np.asarray(emb)).astype(np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.take_along_axis(logp, np.asarray(ids)[..., None], -1)[..., 0]
  np.testing.assert_allclose(embeddings.token_nll(emb, x, ids), want, rtol=1e-5)
