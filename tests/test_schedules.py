import numpy as np
import pytest

from diffusion_text import samplers, schedules


@pytest.mark.parametrize("name", sorted(set(schedules.SCHEDULES) | {"tan-1", "tan-2.5"}))
@pytest.mark.parametrize("T", [10, 2000])
def test_endpoints_and_monotone(name, T):
  ab = schedules.alpha_bar(name, T)
  assert ab.shape == (T + 1,)
  assert ab[0] == 1.0
  assert np.all(np.diff(ab) < 0)
  assert 0 < ab[-1] < 0.05  # x_T is close to pure noise
  assert np.all(np.diff(samplers.log_snr(ab[1:])) < 0)  # the solvers' lambda = log(alpha/sigma)


def test_sqrt_matches_closed_form_where_unclipped():
  T = 2000
  ab = schedules.alpha_bar("sqrt", T)
  u = np.arange(T + 1) / T
  f = 1 - np.sqrt(u + 1e-4)
  # The product of unclipped ratios telescopes to f(t/T) / f(0).
  np.testing.assert_allclose(ab[1:1900], (f / f[0])[1:1900], rtol=1e-10)
  # Diffusion-LM's first step already carries noise of std ~0.12 (its 'x0 ~ N(EMB(w), sigma_0)').
  assert 0.98 < ab[1] < 0.99


def test_cosine_closed_form():
  T = 1000
  ab = schedules.alpha_bar("cosine", T)
  u = np.arange(T + 1) / T
  f = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(ab[1:900], (f / f[0])[1:900], rtol=1e-10)


def test_tan_d_closed_form_and_snr_shift():
  T = 1000
  u = np.arange(T + 1) / T
  ab9 = schedules.alpha_bar("tan-9", T)
  f = 1 / (1 + 81 * np.tan(u * np.pi / 2) ** 2)
  np.testing.assert_allclose(ab9[1:990], f[1:990], rtol=1e-10)  # f(0) = 1: no ratio to divide by
  # tan-1 is the cosine schedule without its offset; tan-d divides its signal-to-noise ratio by d^2
  ab1 = schedules.alpha_bar("tan-1", T)
  np.testing.assert_allclose(ab1[1:990], np.cos(u * np.pi / 2)[1:990] ** 2, rtol=1e-10)
  snr = lambda a: a / (1 - a)
  np.testing.assert_allclose(snr(ab9[1:990]) * 81, snr(ab1[1:990]), rtol=1e-8)


@pytest.mark.parametrize("name", ["quadratic", "tan-0", "tan-", "tan-x", "tan-9-"])
def test_unknown_schedule(name):
  assert not schedules.is_known(name)
  with pytest.raises(ValueError, match="unknown noise schedule"):
    schedules.alpha_bar(name, 10)
