import numpy as np
import pytest

from diffusion_text.data import packing
from diffusion_text.data.tokenizers import BOS, EOS, PAD, SEP


def test_pack_layout_and_round_trip():
  ids, mask = packing.pack([10, 11, 12], [20, 21], max_len=10, max_src_len=4)
  np.testing.assert_array_equal(ids, [BOS, 10, 11, 12, SEP, 20, 21, EOS, PAD, PAD])
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
  assert packing.unpack(ids) == ([10, 11, 12], [20, 21])


@pytest.mark.parametrize("n_src,n_tgt", [(0, 0), (3, 50), (50, 3), (50, 50), (1, 1)])
def test_truncation_never_drops_the_target(n_src, n_tgt):
  L, max_src = 16, 8
  src, tgt = list(range(100, 100 + n_src)), list(range(200, 200 + n_tgt))
  ids, mask = packing.pack(src, tgt, L, max_src)
  s, t = packing.unpack(ids)
  assert s == src[:max_src]
  assert t == tgt[: L - 3 - len(s)]
  if n_tgt:
    assert len(t) >= 1
  assert EOS in ids.tolist() and mask.sum() == L - len(s) - 2


def test_pack_source_matches_training_layout():
  """At sampling time the source sits where it sat in training, and the target region has its size."""
  src = list(range(100, 130))
  train_ids, train_mask = packing.pack(src, [5, 6, 7], 40, 12)
  ids, mask = packing.pack_source(src, 40, 12)
  np.testing.assert_array_equal(mask, train_mask)
  np.testing.assert_array_equal(ids[mask == 0], train_ids[train_mask == 0])
  assert np.all(ids[mask == 1] == PAD)


def test_bad_max_src_len():
  with pytest.raises(ValueError, match="max_src_len"):
    packing.pack([1], [2], 8, 5)
