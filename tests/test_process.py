import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion_text import process


def test_q_sample_moments():
  x0 = jnp.full((4096, 4, 8), 0.7)
  ab = jnp.full((4096,), 0.36)
  eps = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
  x = np.asarray(process.q_sample(x0, ab, eps))
  assert abs(x.mean() - 0.6 * 0.7) < 0.01
  assert abs(x.var() - 0.64) < 0.01


def test_q_sample_mask_keeps_positions_clean():
  x0 = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 4))
  eps = jax.random.normal(jax.random.PRNGKey(2), x0.shape)
  mask = jnp.array([[0, 0, 1, 1, 1, 0]] * 3)
  x = process.q_sample(x0, jnp.full((3,), 0.2), eps, mask)
  np.testing.assert_array_equal(x[:, :2], x0[:, :2])
  np.testing.assert_array_equal(x[:, 5], x0[:, 5])
  assert not np.allclose(x[:, 2:5], x0[:, 2:5])


@pytest.mark.parametrize("ab_t,ab_s", [(0.3, 0.9), (0.01, 0.5), (0.5, 1.0)])
def test_posterior_matches_bayes(ab_t, ab_s):
  """q(x_s | x_t, x0) from the product of q(x_s | x0) and q(x_t | x_s), computed independently."""
  x0, x_t = 0.8, -0.4
  a_ts = ab_t / ab_s
  prior_var = 1 - ab_s
  lik_var = 1 - a_ts
  if prior_var == 0:  # s = 0: the posterior is a point mass at x0
    want_mean, want_var = x0, 0.0
  else:
    prec = 1 / prior_var + a_ts / lik_var
    want_var = 1 / prec
    want_mean = want_var * (np.sqrt(ab_s) * x0 / prior_var + np.sqrt(a_ts) * x_t / lik_var)
  mean, var = process.posterior_mean_var(x0, x_t, ab_t, ab_s)
  np.testing.assert_allclose(float(mean), want_mean, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(var), want_var, rtol=1e-5, atol=1e-7)


def test_eps_x0_round_trip():
  x0 = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 3))
  eps = jax.random.normal(jax.random.PRNGKey(4), x0.shape)
  ab = 0.42
  x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
  np.testing.assert_allclose(process.eps_from_x0(x_t, x0, ab), eps, atol=1e-5)


def test_timestep_grid():
  g = process.timestep_grid(2000, 10)
  assert g[0] == 2000 and g[-1] == 0 and len(g) == 11
  assert np.all(np.diff(g) < 0)
  np.testing.assert_array_equal(process.timestep_grid(7, 7), np.arange(7, -1, -1))
  with pytest.raises(ValueError, match="sampler steps"):
    process.timestep_grid(10, 11)


@pytest.mark.parametrize("T,K,p", [(2000, 200, 1.5), (2000, 200, 3.0), (2000, 1, 2.0), (10, 10, 4.0),
                                   (50, 40, 2.0)])
def test_power_grid_crowds_the_steps_toward_T_and_stays_a_valid_grid(T, K, p):
  """power 1 is the evenly spaced grid; above 1 more of the K steps lie in the top third of t than
  there, and the grid is still K + 1 distinct integers from T down to 0."""
  g = process.timestep_grid(T, K, p)
  assert g[0] == T and g[-1] == 0 and len(g) == K + 1 and np.all(np.diff(g) < 0)
  even = process.timestep_grid(T, K, 1.0)
  np.testing.assert_array_equal(even, np.round(np.linspace(T, 0, K + 1)).astype(np.int32))
  if 3 <= K < T:
    assert np.sum(g > 2 * T / 3) > np.sum(even > 2 * T / 3)
  if K <= T // 5:  # few points need moving: most are T (1 - (1 - u)^p) rounded
    u = np.linspace(1.0, 0.0, K + 1)
    assert np.mean(g == np.round(T * (1 - (1 - u) ** p))) > 0.5
  with pytest.raises(ValueError, match="grid power"):
    process.timestep_grid(T, K, 0.5)
