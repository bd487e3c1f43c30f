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
