"""The variational bound: unbiased Monte Carlo over t, sane for trained vs untrained models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffusion_text import denoiser, likelihood, losses, process

CFG = denoiser.ModelConfig(vocab_size=12, max_len=6, emb_dim=4, width=16, num_layers=1,
                           num_heads=2, mlp_dim=32, dropout=0.0)
DIFF = process.Diffusion("sqrt", 20)
IDS = jnp.array([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 0, 0], [2, 10, 11, 5, 6, 3], [2, 7, 7, 3, 0, 0]])
MASK = jnp.ones_like(IDS)


def _terms(params, rng, num_t):
  model = denoiser.DiffusionLM(CFG)
  f = lambda z, t, x_sc: model.apply({"params": params}, z, t, x_sc)
  return likelihood.diffusion_nll_terms(f, params["embedding"], IDS, MASK, DIFF, rng, num_t)


def test_monte_carlo_over_t_agrees_with_the_full_grid():
  """K=3 stratified timesteps and the full grid (K = T - 1) estimate the same bound."""
  params = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(0)))
  mc = jax.jit(lambda r: _terms(params, r, 3)["diffusion"])
  full = jax.jit(lambda r: _terms(params, r, DIFF.num_steps - 1)["diffusion"])
  a = np.stack([mc(jax.random.PRNGKey(i)) for i in range(200)])
  b = np.stack([full(jax.random.PRNGKey(1000 + i)) for i in range(50)])
  se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
  assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * se), (a.mean(0), b.mean(0), se)
  # the full grid has no variance from t: only eps remains, far less than with 3 timesteps
  assert np.all(b.var(0) < a.var(0))


def test_memorised_corpus_has_a_lower_bound_than_an_untrained_model():
  params = nn.meta.unbox(denoiser.init_params(CFG, jax.random.PRNGKey(1)))
  model = denoiser.DiffusionLM(CFG)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, rng):
    def loss(p):
      f = lambda z, t, x_sc: model.apply({"params": p}, z, t, x_sc)
      return jnp.mean(losses.diffusion_lm_loss(f, p["embedding"], IDS, MASK, IDS == 0, DIFF,
                                               rng).total)
    g = jax.grad(loss)(params)
    upd, opt = tx.update(g, opt)
    return optax.apply_updates(params, upd), opt

  def bpt(p):
    terms = jax.jit(lambda r: _terms(p, r, DIFF.num_steps - 1))
    runs = [jax.device_get(terms(jax.random.PRNGKey(50 + i))) for i in range(4)]
    per_seq = {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
    return likelihood.summarize(per_seq)

  before = bpt(params)
  for i in range(400):
    params, opt = step(params, opt, jax.random.PRNGKey(i))
  after = bpt(params)
  assert after["bits_per_token"] < before["bits_per_token"] - 1.0, (before, after)
  assert after["ci95"][0] <= after["bits_per_token"] <= after["ci95"][1]
  assert after["decoder_bits_per_token"] < before["decoder_bits_per_token"]


def test_summary_is_bits_per_token_of_the_summed_terms():
  per_seq = {"decoder": np.array([1.0, 2.0]), "diffusion": np.array([3.0, 1.0]),
             "diffusion_mc_var": np.zeros(2), "prior": np.array([0.0, 1.0]),
             "tokens": np.array([2.0, 2.0])}
  out = likelihood.summarize(per_seq)
  np.testing.assert_allclose(out["bits_per_token"], 8.0 / 4.0 / np.log(2))
  np.testing.assert_allclose(out["perplexity_bound"], np.exp(2.0))
  ar = likelihood.summarize({"nll": np.array([4.0, 4.0]), "tokens": np.array([2.0, 2.0])})
  np.testing.assert_allclose(ar["bits_per_token"], 2.0 / np.log(2))
  assert ar["ci95"][0] == ar["ci95"][1]  # every sequence has the same rate: no spread
