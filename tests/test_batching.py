import numpy as np
import pytest

from diffusion_text import batching


def test_padded_batches_cover_every_row_once_in_one_shape():
  a, b = np.arange(10), np.arange(10) * 10
  got = list(batching.padded_batches(4, a, b))
  assert [(start, n) for start, n, _ in got] == [(0, 4), (4, 4), (8, 2)]
  assert all(x.shape == (4,) and y.shape == (4,) for _, _, (x, y) in got)
  np.testing.assert_array_equal(got[-1][2][0], [8, 9, 9, 9])  # padded with the last real row
  np.testing.assert_array_equal(np.concatenate([x[:n] for _, n, (x, _) in got]), a)
  np.testing.assert_array_equal(np.concatenate([y[:n] for _, n, (_, y) in got]), b)


def test_padded_batches_reject_bad_input():
  with pytest.raises(ValueError, match="differ in length"):
    list(batching.padded_batches(2, np.arange(3), np.arange(4)))
  with pytest.raises(ValueError, match="positive"):
    list(batching.padded_batches(0, np.arange(3)))


def test_guided_generation_keys_each_batch_by_its_index():
  """control.generate_ids: batch i of fixed shape gets fold_in(PRNGKey(seed), i), per-row term
  arguments travel with their rows, and padded rows are dropped (the streams earlier results used)."""
  import jax
  from diffusion_text import control
  ids = np.arange(8, dtype=np.int32).reshape(4, 2)
  labels = np.arange(4, dtype=np.int32)[:, None] * 100
  calls = []

  def decode(key, b_ids, b_mask, args):
    calls.append((np.asarray(key), b_ids.shape))
    return np.asarray(b_ids) + np.asarray(args[0])

  out = control.generate_ids(decode, ids, np.ones_like(ids), (labels,), batch_size=3, seed=5)
  np.testing.assert_array_equal(out, ids + labels)
  assert [shape for _, shape in calls] == [(3, 2), (3, 2)]
  for i, (key, _) in enumerate(calls):
    np.testing.assert_array_equal(key, np.asarray(jax.random.fold_in(jax.random.PRNGKey(5), i)))
