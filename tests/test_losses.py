import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, losses, process

DIFF = process.Diffusion("sqrt", 100)
EMB = jax.random.normal(jax.random.PRNGKey(0), (12, 4))
IDS = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 12)
PAD = (IDS == 0).astype(jnp.int32)


def test_oracle_denoiser_gives_zero_mse_and_known_prior():
  x0 = embeddings.embed(EMB, IDS)
  terms = losses.diffusion_lm_loss(lambda z, t: x0, EMB, IDS, jnp.ones_like(IDS), PAD, DIFF,
                                   jax.random.PRNGKey(2))
  np.testing.assert_allclose(terms.mse, 0.0, atol=1e-12)
  want_prior = DIFF.alpha_bar[-1] * jnp.mean(x0**2, axis=(1, 2))
  np.testing.assert_allclose(terms.prior, want_prior, rtol=1e-5)
  assert terms.rounding.shape == (3,) and np.all(terms.rounding > 0)


def test_loss_only_on_target_positions():
  """Errors at positions outside the loss mask do not count; PAD can be excluded."""
  x0 = embeddings.embed(EMB, IDS)
  tm = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]] * 3)
  bad_src = lambda z, t: x0.at[:, :3].add(5.0)
  terms = losses.diffusion_lm_loss(bad_src, EMB, IDS, tm, PAD, DIFF, jax.random.PRNGKey(3))
  np.testing.assert_allclose(terms.mse, 0.0, atol=1e-12)
  pad = jnp.zeros_like(IDS).at[:, 6:].set(1)
  bad_pad = lambda z, t: x0.at[:, 6:].add(5.0)
  with_pad = losses.diffusion_lm_loss(bad_pad, EMB, IDS, tm, pad, DIFF, jax.random.PRNGKey(3))
  without = losses.diffusion_lm_loss(bad_pad, EMB, IDS, tm, pad, DIFF, jax.random.PRNGKey(3),
                                     loss_on_pad=False)
  np.testing.assert_allclose(with_pad.mse, 25.0 * 2 / 5, rtol=1e-5)
  np.testing.assert_allclose(without.mse, 0.0, atol=1e-12)


def test_loss_mask_is_target_times_not_pad():
  tm = jnp.array([[0, 1, 1, 1]])
  pad = jnp.array([[0, 0, 1, 1]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, True), [[0, 1, 1, 1]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, False), [[0, 1, 0, 0]])


def test_gradient_reaches_embeddings():
  def f(emb):
    t = losses.diffusion_lm_loss(lambda z, t: 0.5 * z, emb, IDS, jnp.ones_like(IDS), PAD, DIFF,
                                 jax.random.PRNGKey(4))
    return jnp.mean(t.total)
  g = jax.grad(f)(EMB)
  used = np.unique(np.asarray(IDS))
  assert np.all(np.linalg.norm(np.asarray(g)[used], axis=-1) > 0)
