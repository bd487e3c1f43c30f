import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion_text import process, samplers

DIFF = process.Diffusion("sqrt", 200)
SHAPE = (4, 6, 3)
X0 = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
EMB = jax.random.normal(jax.random.PRNGKey(9), (20, 3))


def oracle(z_t, t, x_sc):
  """A perfect x0-denoiser for a point-mass data distribution at X0."""
  del t, x_sc
  return jnp.broadcast_to(X0, z_t.shape)


def _sample(**kw):
  return jax.jit(functools.partial(samplers.sample, oracle, EMB, DIFF, shape=SHAPE, **kw))(
      jax.random.PRNGKey(1))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0),
                                         ("dpm++2m", 0.0)])
@pytest.mark.parametrize("steps", [1, 7, 200])
def test_oracle_denoiser_returns_x0(sampler, eta, steps):
  np.testing.assert_allclose(_sample(sampler=sampler, steps=steps, eta=eta), X0, atol=1e-5)


def test_ddim_eta1_equals_ddpm_with_same_noise():
  """DDIM with eta=1 has exactly the ancestral step's mean and variance, on any grid."""
  def noisy_denoiser(z_t, t, x_sc):  # not an oracle, so the trajectory depends on every step
    return 0.5 * z_t + 0.01 * t[:, None, None].astype(jnp.float32) / 200

  for steps in (200, 13):
    kw = dict(shape=SHAPE, steps=steps)
    a = samplers.sample(noisy_denoiser, EMB, DIFF, jax.random.PRNGKey(3), sampler="ddpm", **kw)
    b = samplers.sample(noisy_denoiser, EMB, DIFF, jax.random.PRNGKey(3), sampler="ddim", eta=1.0,
                        **kw)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_ddpm_step_has_posterior_moments():
  ab = DIFF.alpha_bar
  t, s = 150, 90
  x_t = jnp.full((20000, 1, 1), 0.3)
  x0 = jnp.full_like(x_t, -0.5)
  out = np.asarray(samplers.ddpm_step(jax.random.PRNGKey(4), x_t, x0, ab[t], ab[s]))
  mean, var = process.posterior_mean_var(-0.5, 0.3, ab[t], ab[s])
  assert abs(out.mean() - float(mean)) < 0.01
  assert abs(out.var() / float(var) - 1) < 0.03


def test_respaced_ddim_uses_true_alpha_bar():
  """A deterministic DDIM jump t -> s with the true x0 lands exactly on q(x_s | x0) with the same eps.

  DiffuSeq v1 uses alpha_bar_{t-1} for the target of a skipped step; that fails this test.
  """
  ab = DIFF.alpha_bar
  eps = jax.random.normal(jax.random.PRNGKey(5), SHAPE)
  t, s = 180, 20
  x_t = jnp.sqrt(ab[t]) * X0 + jnp.sqrt(1 - ab[t]) * eps
  x_s = samplers.ddim_step(None, x_t, X0, ab[t], ab[s], eta=0.0)
  np.testing.assert_allclose(x_s, jnp.sqrt(ab[s]) * X0 + jnp.sqrt(1 - ab[s]) * eps, atol=1e-5)


@pytest.mark.parametrize("sampler", sorted(samplers.SAMPLERS))
def test_masked_positions_never_change(sampler):
  mask = jnp.array([[0, 0, 1, 1, 1, 1]] * SHAPE[0])
  x_cond = jax.random.normal(jax.random.PRNGKey(6), SHAPE)
  x = samplers.sample(lambda z, t, x_sc: 0.9 * z + 0.1 * x_sc, EMB, DIFF, jax.random.PRNGKey(7), shape=SHAPE,
                      steps=17, sampler=sampler, eta=0.5, clamp=True, x_cond_BxLxE=x_cond,
                      mask_BxL=mask)
  np.testing.assert_array_equal(x[:, :2], x_cond[:, :2])


def test_clamp_puts_final_sample_on_embeddings():
  x = samplers.sample(lambda z, t, x_sc: z, EMB, DIFF, jax.random.PRNGKey(8), shape=SHAPE, steps=5,
                      sampler="ddpm", clamp=True)
  d = jnp.min(jnp.sum((x[:, :, None] - EMB[None, None]) ** 2, -1), -1)
  np.testing.assert_allclose(d, 0.0, atol=1e-8)


def test_commit_fixes_the_most_confident_free_positions_first():
  """Free positions whose x0_hat is an embedding (confident) are fixed before blends of two."""
  blend = 0.5 * (EMB[3] + EMB[4])
  x0_hat = jnp.stack([EMB[1], blend, EMB[2], blend, EMB[5], EMB[6]])[None]  # (1, 6, 3)
  mask0 = jnp.array([[0, 1, 1, 1, 1, 1]])
  x_cond = jnp.zeros((1, 6, 3))
  x_half, m_half = samplers.commit_most_confident(EMB, x0_hat, x_cond, mask0, mask0, 0.6)
  np.testing.assert_array_equal(m_half, [[0, 1, 0, 1, 0, 0]])  # 3 of 5: the exact ones
  np.testing.assert_array_equal(x_half[0, np.array([2, 4, 5])], EMB[np.array([2, 5, 6])])
  np.testing.assert_array_equal(x_half[0, 0], 0.0)  # a source position is not touched
  # the next step fixes the rest; positions already fixed stay as they were
  x_all, m_all = samplers.commit_most_confident(EMB, 0.0 * x0_hat, x_half, m_half, mask0, 1.0)
  np.testing.assert_array_equal(m_all, [[0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(x_all[0, np.array([2, 4, 5])], EMB[np.array([2, 5, 6])])


@pytest.mark.parametrize("sampler", sorted(samplers.SAMPLERS))
def test_commit_ends_on_embeddings_and_keeps_the_source(sampler):
  mask = jnp.array([[0, 0, 1, 1, 1, 1]] * SHAPE[0])
  x_cond = jax.random.normal(jax.random.PRNGKey(6), SHAPE)
  kw = dict(shape=SHAPE, steps=3, sampler=sampler, x_cond_BxLxE=x_cond, mask_BxL=mask)
  x = samplers.sample(lambda z, t, x_sc: 0.9 * z, EMB, DIFF, jax.random.PRNGKey(7), commit=True,
                      **kw)
  np.testing.assert_array_equal(x[:, :2], x_cond[:, :2])
  d = jnp.min(jnp.sum((x[:, 2:, None] - EMB[None, None]) ** 2, -1), -1)
  np.testing.assert_allclose(d, 0.0, atol=1e-8)
  # an oracle's estimates are fixed as they are: the same result as without commit
  on_emb = jnp.broadcast_to(EMB[jnp.arange(6) + 2], SHAPE)
  exact = lambda z, t, x_sc: jnp.broadcast_to(on_emb, z.shape)
  a = samplers.sample(exact, EMB, DIFF, jax.random.PRNGKey(7), commit=True, **kw)
  b = samplers.sample(exact, EMB, DIFF, jax.random.PRNGKey(7), **kw)
  np.testing.assert_allclose(a, b, atol=1e-5)
  with pytest.raises(ValueError, match="commit needs mask_BxL"):
    samplers.sample(exact, EMB, DIFF, jax.random.PRNGKey(7), shape=SHAPE, commit=True)


@pytest.mark.parametrize("sampler", sorted(samplers.SAMPLERS))
def test_trace_size_independent_of_steps(sampler):
  """One scan: the traced program (and so memory) does not grow with the number of steps."""
  def n_eqns(steps):
    f = functools.partial(samplers.sample, oracle, EMB, DIFF, shape=SHAPE, steps=steps,
                          sampler=sampler)
    return len(jax.make_jaxpr(f)(jax.random.PRNGKey(0)).eqns)
  assert n_eqns(5) == n_eqns(200)


# A 1-D Gaussian data distribution N(M, S^2): its exact x0-denoiser is known, and the probability-flow
# ODE keeps the standardised value (x_t - sqrt(ab_t) M) / sqrt(ab_t S^2 + 1 - ab_t) constant, so its
# exact solution from t0 to t1 is known in closed form. The solve runs over an interior interval
# (t 800 -> 100 of a cosine schedule) where log-SNR is smooth, so the measured rate is the solver's.
M, S = 0.7, 0.5
GAUSS = process.Diffusion("cosine", 1000)


def gaussian_denoiser(z_t, t, x_sc):
  del x_sc
  ab = GAUSS.alpha_bar[t][:, None, None]
  return M + S**2 * jnp.sqrt(ab) / (ab * S**2 + 1 - ab) * (z_t - jnp.sqrt(ab) * M)


def _ode_error(sampler, steps, t0=800, t1=100):
  ab = GAUSS.alpha_bar_np.astype(np.float64)
  std = lambda t: np.sqrt(ab[t] * S**2 + 1 - ab[t])
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(11), (256, 1, 1)), np.float64)
  x_t0 = np.sqrt(ab[t0]) * M + std(t0) * z
  exact = np.sqrt(ab[t1]) * M + std(t1) * z
  grid = np.round(np.linspace(t0, t1, steps + 1)).astype(np.int32)
  x = samplers.sample(gaussian_denoiser, EMB[:, :1], GAUSS, jax.random.PRNGKey(0), shape=z.shape,
                      sampler=sampler, grid=grid, x_init_BxLxE=jnp.asarray(x_t0, jnp.float32))
  return float(np.max(np.abs(np.asarray(x, np.float64) - exact)))


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpm++2m", 2)])
def test_ode_solver_order_on_gaussian(sampler, order):
  """Doubling the steps divides the error by about 2**order (DDIM first order, DPM-Solver++ 2M
  second order); DPM-Solver++ is far more accurate at a small budget."""
  errs = [_ode_error(sampler, k) for k in (20, 40, 80)]
  rates = [np.log2(errs[i] / errs[i + 1]) for i in range(2)]
  assert all(abs(r - order) < 0.3 for r in rates), (errs, rates)
  if sampler == "dpm++2m":
    assert _ode_error("dpm++2m", 10) < 0.2 * _ode_error("ddim", 10)


def test_custom_grid_validation():
  with pytest.raises(ValueError, match="strictly decreasing"):
    samplers.sample(oracle, EMB, DIFF, jax.random.PRNGKey(0), shape=SHAPE, grid=[10, 10, 0])


def test_self_conditioning_input_is_zero_first_then_previous_estimate():
  seen = []

  def recording(z_t, t, x_sc):
    jax.debug.callback(lambda a: seen.append(np.asarray(a)), x_sc)
    return 0.5 * z_t + 1.0

  samplers.sample(recording, EMB, DIFF, jax.random.PRNGKey(12), shape=SHAPE, steps=4,
                  sampler="ddim")
  jax.effects_barrier()
  assert len(seen) == 4
  np.testing.assert_array_equal(seen[0], 0.0)
  assert all(np.abs(s).max() > 0.1 for s in seen[1:])


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown sampler"):
    samplers.sample(oracle, EMB, DIFF, jax.random.PRNGKey(0), shape=SHAPE, sampler="euler")
  with pytest.raises(ValueError, match="sampler steps"):
    samplers.sample(oracle, EMB, DIFF, jax.random.PRNGKey(0), shape=SHAPE, steps=201)


def test_score_temperature_scales_the_implied_noise():
  """temper_x0 divides the implied eps (the score up to -1/sqrt(1-ab)) by the temperature; 1 is the
  identity."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x_t, x0 = jax.random.normal(k1, (2, 5, 4)), jax.random.normal(k2, (2, 5, 4))
  ab = jnp.float32(0.3)
  np.testing.assert_allclose(samplers.temper_x0(x_t, x0, ab, 1.0), x0, rtol=1e-6, atol=1e-6)
  eps = process.eps_from_x0(x_t, x0, ab)
  np.testing.assert_allclose(process.eps_from_x0(x_t, samplers.temper_x0(x_t, x0, ab, 0.8), ab),
                             eps / 0.8, rtol=1e-5, atol=1e-5)


def test_score_temperature_must_be_positive():
  diffusion = process.Diffusion("sqrt", 10)
  with pytest.raises(ValueError, match="score_temp"):
    samplers.sample(lambda z, t, x: z, jnp.eye(4), diffusion, jax.random.PRNGKey(0),
                    shape=(1, 3, 4), steps=2, score_temp=0.0)
