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
  terms = losses.diffusion_lm_loss(lambda z, t, x_sc: x0, EMB, IDS, jnp.ones_like(IDS), PAD, DIFF,
                                   jax.random.PRNGKey(2))
  np.testing.assert_allclose(terms.mse, 0.0, atol=1e-12)
  want_prior = DIFF.alpha_bar[-1] * jnp.mean(x0**2, axis=(1, 2))
  np.testing.assert_allclose(terms.prior, want_prior, rtol=1e-5)
  assert terms.rounding.shape == (3,) and np.all(terms.rounding > 0)


def test_loss_only_on_target_positions():
  """Errors at positions outside the loss mask do not count; PAD can be excluded."""
  x0 = embeddings.embed(EMB, IDS)
  tm = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]] * 3)
  bad_src = lambda z, t, x_sc: x0.at[:, :3].add(5.0)
  terms = losses.diffusion_lm_loss(bad_src, EMB, IDS, tm, PAD, DIFF, jax.random.PRNGKey(3))
  np.testing.assert_allclose(terms.mse, 0.0, atol=1e-12)
  pad = jnp.zeros_like(IDS).at[:, 6:].set(1)
  bad_pad = lambda z, t, x_sc: x0.at[:, 6:].add(5.0)
  with_pad = losses.diffusion_lm_loss(bad_pad, EMB, IDS, tm, pad, DIFF, jax.random.PRNGKey(3))
  without = losses.diffusion_lm_loss(bad_pad, EMB, IDS, tm, pad, DIFF, jax.random.PRNGKey(3),
                                     loss_on_pad=False)
  half = losses.diffusion_lm_loss(bad_pad, EMB, IDS, tm, pad, DIFF, jax.random.PRNGKey(3),
                                  pad_weight=0.5)
  np.testing.assert_allclose(with_pad.mse, 25.0 * 2 / 5, rtol=1e-5)
  np.testing.assert_allclose(without.mse, 0.0, atol=1e-12)
  np.testing.assert_allclose(half.mse, 25.0 * 2 * 0.5 / (3 + 2 * 0.5), rtol=1e-5)  # weighted mean


def test_loss_mask_is_target_times_not_pad():
  tm = jnp.array([[0, 1, 1, 1]])
  pad = jnp.array([[0, 0, 1, 1]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, True), [[0, 1, 1, 1]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, False), [[0, 1, 0, 0]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, True, 0.25), [[0, 1, 0.25, 0.25]])
  np.testing.assert_array_equal(losses.loss_mask(tm, pad, False, 0.25), [[0, 1, 0, 0]])


def test_gradient_reaches_embeddings():
  def f(emb):
    t = losses.diffusion_lm_loss(lambda z, t, x_sc: 0.5 * z, emb, IDS, jnp.ones_like(IDS), PAD, DIFF,
                                 jax.random.PRNGKey(4))
    return jnp.mean(t.total)
  g = jax.grad(f)(EMB)
  used = np.unique(np.asarray(IDS))
  assert np.all(np.linalg.norm(np.asarray(g)[used], axis=-1) > 0)


def test_self_conditioning_feeds_anchored_first_estimate_without_gradient():
  """With self_cond_prob p, about p of the examples get the first pass's estimate (source positions
  at their clean embeddings) as x_sc, the rest zeros; no gradient flows through the first pass."""
  B = 400
  ids = jax.random.randint(jax.random.PRNGKey(5), (B, 8), 0, 12)
  tm = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1]] * B)
  x0 = embeddings.embed(EMB, ids)
  calls = []

  def denoise(z, t, x_sc):
    calls.append(x_sc)
    return 0.5 * z + 0.25 * x_sc

  losses.diffusion_lm_loss(denoise, EMB, ids, tm, (ids == 0), DIFF, jax.random.PRNGKey(6),
                           self_cond_prob=0.3)
  assert len(calls) == 2
  np.testing.assert_array_equal(calls[0], 0.0)
  x_sc = np.asarray(calls[1])
  used = np.abs(x_sc).reshape(B, -1).max(-1) > 0
  assert 0.2 < used.mean() < 0.4
  np.testing.assert_allclose(x_sc[used][:, :2], np.asarray(x0)[used][:, :2], rtol=1e-6)
  np.testing.assert_array_equal(x_sc[~used], 0.0)

  # Gradient wrt the denoiser's parameter: only the second pass contributes.
  def loss(w):
    f = lambda z, t, x_sc: w * z + x_sc
    return jnp.sum(losses.diffusion_lm_loss(f, EMB, ids, tm, (ids == 0), DIFF,
                                            jax.random.PRNGKey(6), self_cond_prob=0.3).mse)

  def loss_with_first_pass_held(w):
    first = {}
    def f(z, t, x_sc):
      if not first:
        first["x"] = process.apply_mask(0.5 * z, x0, tm)
        return 0.5 * z
      return w * z + x_sc
    return jnp.sum(losses.diffusion_lm_loss(f, EMB, ids, tm, (ids == 0), DIFF,
                                            jax.random.PRNGKey(6), self_cond_prob=0.3).mse)
  np.testing.assert_allclose(jax.grad(loss)(0.5), jax.grad(loss_with_first_pass_held)(0.5),
                             rtol=1e-5)


def test_soft_absorbing_state_replaces_target_tokens_at_a_rate_growing_with_t():
  """With absorb_prob, target positions are swapped for the absorbing embedding before noising, at
  rate absorb_prob * t / T; source positions never; the absorbing embedding gets a gradient."""
  B = 3000
  ids = jax.random.randint(jax.random.PRNGKey(7), (B, 8), 5, 12)
  tm = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1]] * B)
  absorbing = jnp.full((4,), 50.0)  # far from every word embedding, so visible through the noise
  inputs = {}

  def denoise(z, t, x_sc):
    inputs["z"], inputs["t"] = z, t
    return jnp.zeros_like(z)

  losses.diffusion_lm_loss(denoise, EMB, ids, tm, ids == 0, DIFF, jax.random.PRNGKey(8),
                           absorb_prob=0.8, absorbing_E=absorbing)
  z, t = np.asarray(inputs["z"]), np.asarray(inputs["t"])
  ab = np.asarray(DIFF.alpha_bar)[t]
  is_abs = z.mean(-1) > 25.0 * np.sqrt(ab)[:, None]
  assert not is_abs[t < 70][:, :2].any()
  for lo, hi in ((1, 30), (30, 70)):  # where sqrt(alpha_bar) * 50 stands well above the noise
    sel = (t >= lo) & (t < hi)
    want = np.mean(0.8 * t[sel] / DIFF.num_steps)
    np.testing.assert_allclose(is_abs[sel][:, 2:].mean(), want, atol=0.025)

  def f(a):
    return jnp.sum(losses.diffusion_lm_loss(lambda z, t, x_sc: 0.5 * z, EMB, ids, tm, ids == 0,
                                            DIFF, jax.random.PRNGKey(9), absorb_prob=1.0,
                                            absorbing_E=a).mse)
  assert np.linalg.norm(np.asarray(jax.grad(f)(absorbing))) > 0


def test_denoiser_cross_entropy_term():
  """ce_weight adds w * -log softmax(logits)[w] (masked mean) to the total; a denoiser whose logits
  put all mass on the right words has ce ~ 0; the term needs logits."""
  x0 = embeddings.embed(EMB, IDS)
  onehot = 50.0 * jax.nn.one_hot(IDS, 12)
  uniform = jnp.zeros((3, 8, 12))
  ones = jnp.ones_like(IDS)
  sure = losses.diffusion_lm_loss(lambda z, t, s: (x0, onehot), EMB, IDS, ones, PAD, DIFF,
                                  jax.random.PRNGKey(2), ce_weight=2.0)
  flat = losses.diffusion_lm_loss(lambda z, t, s: (x0, uniform), EMB, IDS, ones, PAD, DIFF,
                                  jax.random.PRNGKey(2), ce_weight=2.0)
  plain = losses.diffusion_lm_loss(lambda z, t, s: x0, EMB, IDS, ones, PAD, DIFF,
                                   jax.random.PRNGKey(2))
  np.testing.assert_allclose(sure.ce, 0.0, atol=1e-6)
  np.testing.assert_allclose(flat.ce, np.log(12.0), rtol=1e-5)
  np.testing.assert_allclose(flat.total, plain.total + 2.0 * np.log(12.0), rtol=1e-5)
  try:
    losses.diffusion_lm_loss(lambda z, t, s: x0, EMB, IDS, ones, PAD, DIFF, jax.random.PRNGKey(2),
                             ce_weight=1.0)
  except ValueError as e:
    assert "logits" in str(e)
  else:
    raise AssertionError("ce_weight without logits must fail")


def test_condition_dropout_replaces_whole_sources_only():
  ids = jnp.array([[2, 10, 11, 4, 20, 3, 0]] * 200)
  tm = jnp.array([[0, 0, 0, 0, 1, 1, 1]] * 200)
  out = np.asarray(losses.drop_condition(ids, tm, jax.random.PRNGKey(0), 0.3))
  dropped = np.all(out[:, 1:3] == 0, axis=1)
  kept = np.all(out == np.asarray(ids), axis=1)
  assert np.all(dropped | kept) and 0.2 < dropped.mean() < 0.4
  np.testing.assert_array_equal(out[:, [0, 3, 4, 5, 6]], np.asarray(ids)[:, [0, 3, 4, 5, 6]])


def test_revealed_targets_are_words_of_the_target_at_a_rate_drawn_per_example():
  B = 4000
  tm = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1]] * B)
  pad = jnp.array([[0, 0, 0, 0, 0, 0, 1, 1]] * B)
  out = np.asarray(losses.reveal_targets(tm, pad, jax.random.PRNGKey(0), 0.5))
  np.testing.assert_array_equal(out[:, [0, 1, 6, 7]], np.asarray(tm)[:, [0, 1, 6, 7]])
  revealed = (out[:, 2:6] == 0).sum(1)  # of 4 target words
  # half the rows reveal nothing; the other half reveal Binomial(4, u), u ~ U(0, 1): 0..4 equally
  # likely (probability 1/5 each), so rows with none are 0.5 + 0.5 / 5 = 0.6
  assert abs((revealed == 0).mean() - 0.6) < 0.03
  for k in range(1, 5):
    assert abs((revealed == k).mean() - 0.1) < 0.02
  np.testing.assert_array_equal(losses.reveal_targets(tm, pad, jax.random.PRNGKey(0), 0.0), tm)


def test_t_power_moves_training_timesteps_to_high_noise():
  """t = ceil(T u^p): p = 1 is uniform on 1..T (mean (T+1)/2), p = 0.5 has mean T * 2/3 (E[u^0.5]);
  every t stays in 1..T."""
  ids = jnp.zeros((20_000, 2), jnp.int32)
  seen = {}

  def record(z, t, x_sc):
    seen["t"] = np.asarray(t)
    return jnp.zeros_like(z)

  for p, want in ((1.0, (DIFF.num_steps + 1) / 2), (0.5, DIFF.num_steps * 2 / 3)):
    losses.diffusion_lm_loss(record, EMB, ids, jnp.ones_like(ids), jnp.zeros_like(ids), DIFF,
                             jax.random.PRNGKey(4), t_power=p)
    t = seen["t"]
    assert t.min() >= 1 and t.max() == DIFF.num_steps
    np.testing.assert_allclose(t.mean(), want, rtol=0.02)
  assert np.mean(t > DIFF.num_steps // 2) > 0.7  # p = 0.5: 3/4 of the examples in the noisier half


def test_loss_aware_probs_are_uniform_until_every_t_has_a_history_then_follow_its_rms():
  stats = losses.loss_aware_init(3, history=2)
  stats = losses.loss_aware_update(stats, jnp.array([1, 2, 3, 1]), jnp.array([1.0, 3.0, 0.0, 1.0]),
                                   3)
  np.testing.assert_allclose(losses.loss_aware_probs(stats, 3), [1 / 3] * 3)  # t = 2, 3: one loss
  stats = losses.loss_aware_update(stats, jnp.array([2, 3]), jnp.array([4.0, 0.0]), 3)
  # t = 1's two losses of one batch both count; t = 3's losses are 0: it keeps the uniform share
  rms = np.array([1.0, np.sqrt((9 + 16) / 2), 0.0])
  u = losses.LOSS_AWARE_UNIFORM
  np.testing.assert_allclose(losses.loss_aware_probs(stats, 3), (1 - u) * rms / rms.sum() + u / 3,
                             rtol=1e-6)
  # a ring of 2 per t: a third loss at t = 1 replaces the first
  stats = losses.loss_aware_update(stats, jnp.array([1]), jnp.array([5.0]), 3)
  assert sorted(np.asarray(stats["hist"][0]).tolist()) == [1.0, 5.0]
  np.testing.assert_array_equal(stats["count"], [3, 2, 2])


def test_loss_aware_levels_are_bins_of_consecutive_t_when_t_is_large():
  """T = 10 in 5 levels of 2 consecutive t: a level's probability is shared evenly by its t."""
  stats = losses.loss_aware_init(10, history=1, bins=5)
  assert stats["hist"].shape == (5, 1)
  t = jnp.array([1, 4, 5, 8, 10])  # one draw in each level (1-2, 3-4, 5-6, 7-8, 9-10)
  stats = losses.loss_aware_update(stats, t, jnp.array([1.0, 1.0, 2.0, 2.0, 4.0]), 10)
  p = np.asarray(losses.loss_aware_probs(stats, 10, uniform=0.0))
  np.testing.assert_allclose(p, np.repeat([0.1, 0.1, 0.2, 0.2, 0.4], 2) / 2, rtol=1e-6)


def test_warped_probs_follow_the_rise_of_the_monotone_loss_curve():
  """CDCD's time warping: the levels' mean losses 1, 3, 2 (a dip: the fitted curve is their running
  maximum 1, 3, 3) and 6 rise by 1, 2, 0, 3, so t is drawn in those proportions plus the uniform
  share; a level whose loss does not rise keeps only that share."""
  stats = losses.loss_aware_init(8, history=2, bins=4)
  t = jnp.array([1, 2, 3, 4, 5, 6, 7, 8])  # two draws in each level of two t
  stats = losses.loss_aware_update(stats, t, jnp.array([0.0, 2.0, 3.0, 3.0, 1.0, 3.0, 6.0, 6.0]), 8)
  u = 0.2
  p = np.asarray(losses.warped_probs(stats, 8, uniform=u))
  want = (1 - u) * np.array([1.0, 2.0, 0.0, 3.0]) / 6 + u / 4
  np.testing.assert_allclose(p, np.repeat(want, 2) / 2, rtol=1e-6)
  assert losses.T_SAMPLER_REWEIGHTS == {"loss_aware": True, "warped": False}
  # uniform until every level has a full history
  half = losses.loss_aware_update(losses.loss_aware_init(8, history=2, bins=4), t[:4],
                                  jnp.ones((4,)), 8)
  np.testing.assert_allclose(losses.warped_probs(half, 8), [1 / 8] * 8)


def test_a_t_draw_without_reweighting_changes_the_objective_not_the_weights():
  """``reweight_t=False`` (time warping): t follows p and every example keeps weight 1."""
  T = DIFF.num_steps
  p = np.zeros(T, np.float32)
  p[-1] = 1.0
  ids = jnp.zeros((64, 2), jnp.int32)
  terms = losses.diffusion_lm_loss(lambda z, t, x_sc: jnp.zeros_like(z), EMB, ids,
                                   jnp.ones_like(ids), jnp.zeros_like(ids), DIFF,
                                   jax.random.PRNGKey(6), t_probs_T=jnp.asarray(p),
                                   reweight_t=False)
  np.testing.assert_array_equal(np.asarray(terms.t), T)
  np.testing.assert_array_equal(np.asarray(terms.iw), 1.0)
  np.testing.assert_allclose(np.asarray(terms.total),
                             np.asarray(terms.t_loss + terms.rounding + terms.prior), rtol=1e-6)


def test_loss_aware_draw_follows_its_distribution_and_keeps_the_objective():
  """t ~ p and the t-dependent terms weighted 1 / (T p(t)): the draw's histogram is p, and the
  weighted mean of any f(t) estimates its uniform mean (here f(t) = t, (T + 1) / 2)."""
  T = DIFF.num_steps
  p = np.linspace(1.0, 9.0, T)
  p /= p.sum()
  ids = jnp.zeros((40_000, 2), jnp.int32)
  seen = {}

  def record(z, t, x_sc):
    seen["t"] = np.asarray(t)
    return jnp.zeros_like(z)

  terms = losses.diffusion_lm_loss(record, EMB, ids, jnp.ones_like(ids), jnp.zeros_like(ids), DIFF,
                                   jax.random.PRNGKey(5), t_probs_T=jnp.asarray(p, jnp.float32))
  t, iw = seen["t"], np.asarray(terms.iw)
  np.testing.assert_allclose(iw * T * p[t - 1], 1.0, rtol=1e-5)
  top = t > T // 2
  np.testing.assert_allclose(top.mean(), p[T // 2:].sum(), atol=0.01)
  np.testing.assert_allclose(np.mean(iw * t), (T + 1) / 2, rtol=0.03)
  np.testing.assert_allclose(np.asarray(terms.total),
                             iw * np.asarray(terms.t_loss) + np.asarray(terms.rounding + terms.prior),
                             rtol=1e-6)


def test_held_out_loss_ignores_training_only_levers():
  """The deterministic (held-out) loss of a run trained with t_power and soft absorbing is the plain
  Diffusion-LM estimate, so runs with and without them are comparable; the training loss is not."""
  from flax import linen as nn
  from configs import tiny
  from diffusion_text import denoiser, families
  plain = tiny.get_config("seq2seq")
  plain.unlock()
  plain.diffusion.absorb_prob = 0.0
  levers = tiny.get_config("seq2seq")
  levers.unlock()
  levers.diffusion.update(absorb_prob=0.9, t_power=0.3, reveal_prob=1.0)
  model_cfg = families.model_config(levers, 40)
  model = denoiser.DiffusionLM(model_cfg)
  params = nn.meta.unbox(denoiser.init_params(model_cfg, jax.random.PRNGKey(0)))
  assert "absorbing" in params
  ids = jnp.asarray(np.tile(np.array([2, 7, 8, 3, 9, 10, 11, 12, 3] + [0] * 39, np.int32), (4, 1)))
  tgt = (jnp.arange(48) >= 4) & (jnp.arange(48) < 9)
  batch = {"ids": ids, "target_mask": jnp.broadcast_to(tgt, ids.shape).astype(jnp.int32),
           "pad_mask": (ids > 0).astype(jnp.int32)}
  terms = lambda c, det: families.family_of(c).loss_terms(model, params, batch,
                                                          jax.random.PRNGKey(3), c, det)["loss"]
  np.testing.assert_allclose(terms(levers, True), terms(plain, True), rtol=1e-6)
  assert not np.allclose(terms(levers, False), terms(plain, False))
