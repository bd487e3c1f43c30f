import numpy as np
import pytest

from diffusion_text.data import packing
from diffusion_text.data.tokenizers import BOS, EOS, PAD, SEP


def test_pack_layout_and_round_trip():
  ids, mask = packing.pack([10, 11, 12], [20, 21], max_len=10, max_src_len=4)
  np.testing.assert_array_equal(ids, [BOS, 10, 11, 12, SEP, 20, 21, EOS, PAD, PAD])
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
  assert packing.unpack(ids) == ([10, 11, 12], [20, 21])


def test_fixed_target_start_right_aligns_the_source():
  ids, mask = packing.pack([10, 11], [20, 21], max_len=10, max_src_len=4, target_start="fixed")
  np.testing.assert_array_equal(ids, [PAD, PAD, BOS, 10, 11, SEP, 20, 21, EOS, PAD])
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
  assert packing.unpack(ids) == ([10, 11], [20, 21])


def test_aligned_target_start_left_aligns_the_source():
  ids, mask = packing.pack([10, 11], [20, 21], max_len=10, max_src_len=4, target_start="aligned")
  np.testing.assert_array_equal(ids, [BOS, 10, 11, PAD, PAD, SEP, 20, 21, EOS, PAD])
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
  assert packing.unpack(ids) == ([10, 11], [20, 21])


@pytest.mark.parametrize("target_start", packing.FIXED_STARTS)
@pytest.mark.parametrize("n_src", [0, 1, 3, 8, 30])
def test_fixed_target_start_does_not_move_with_the_source(n_src, target_start):
  """The first target position is max_src_len + 2 for every source length (the lever's point);
  ``aligned`` also keeps source token k at position 1 + k."""
  src = list(range(100, 100 + n_src))
  ids, mask = packing.pack(src, [20, 21, 22], 24, 8, target_start)
  assert int(np.argmax(mask)) == 8 + 2 and mask.sum() == 24 - 10
  assert ids[8 + 1] == SEP and ids[8 + 2] == 20
  if target_start == "aligned":
    assert ids[1: 1 + min(n_src, 8)].tolist() == src[:8]


@pytest.mark.parametrize("target_start", packing.SOURCE_REGION_STARTS)
@pytest.mark.parametrize("n_src,n_tgt", [(0, 0), (3, 50), (50, 3), (50, 50), (1, 1)])
def test_truncation_never_drops_the_target(n_src, n_tgt, target_start):
  L, max_src = 16, 8
  src, tgt = list(range(100, 100 + n_src)), list(range(200, 200 + n_tgt))
  ids, mask = packing.pack(src, tgt, L, max_src, target_start)
  s, t = packing.unpack(ids)
  assert s == src[:max_src]
  used = max_src if target_start in packing.FIXED_STARTS else len(s)
  assert t == tgt[: L - 3 - used]
  if n_tgt:
    assert len(t) >= 1
  assert EOS in ids.tolist() and mask.sum() == L - used - 2


@pytest.mark.parametrize("target_start", packing.SOURCE_REGION_STARTS)
def test_pack_source_matches_training_layout(target_start):
  """At sampling time the source sits where it sat in training, and the target region has its size."""
  for src in (list(range(100, 130)), [100, 101]):
    train_ids, train_mask = packing.pack(src, [5, 6, 7], 40, 12, target_start)
    ids, mask = packing.pack_source(src, 40, 12, target_start)
    np.testing.assert_array_equal(mask, train_mask)
    np.testing.assert_array_equal(ids[mask == 0], train_ids[train_mask == 0])
    assert np.all(ids[mask == 1] == PAD)


def test_bad_max_src_len_and_layout():
  with pytest.raises(ValueError, match="max_src_len"):
    packing.pack([1], [2], 8, 5)
  with pytest.raises(ValueError, match="target_start"):
    packing.pack([1], [2], 8, 2, "middle")


def test_in_place_noises_only_the_slots_and_keeps_the_given_words():
  slot = 7
  src, tgt = [10, slot, 11, slot], [10, 20, 11, 21]
  ids, mask = packing.pack(src, tgt, 8, 3, "in_place", slot_id=slot)
  assert ids.tolist() == [BOS, 10, 20, 11, 21, EOS, PAD, PAD]
  assert mask.tolist() == [0, 0, 1, 0, 1, 0, 0, 0]
  # the sampling input: the same mask, the given words in place, the slots' values to be noised
  s_ids, s_mask = packing.pack_source(src, 8, 3, "in_place", slot_id=slot)
  assert s_mask.tolist() == mask.tolist()
  assert s_ids[s_mask == 0].tolist() == ids[mask == 0].tolist()
  assert packing.unpack(ids)[1] == tgt  # no SEP: the whole sequence is the target
  with pytest.raises(ValueError, match="one token per word"):
    packing.pack(src, tgt[:3], 8, 3, "in_place", slot_id=slot)
  with pytest.raises(ValueError, match="slot word's id"):
    packing.pack(src, tgt, 8, 3, "in_place")


def test_pack_blocks_joins_texts_without_pad_and_split_blocks_gives_them_back():
  from diffusion_text.data.tokenizers import BOS, EOS, PAD
  texts = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
  blocks = packing.pack_blocks(texts, 6)
  # stream: B 5 6 7 E B | 8 E B 9 10 11 | 12 E B 13 14 E  (18 tokens, 3 rows)
  assert blocks.tolist() == [[BOS, 5, 6, 7, EOS, BOS], [8, EOS, BOS, 9, 10, 11],
                             [12, EOS, BOS, 13, 14, EOS]]
  assert not (blocks == PAD).any()
  # only texts whole inside one row come back; the ones cut at a row's edge do not
  assert [packing.split_blocks(r) for r in blocks] == [[[5, 6, 7]], [], [[13, 14]]]
  assert packing.split_blocks([BOS, 5, BOS, 6, EOS]) == [[6]]  # a BOS before the EOS cuts a span
  assert packing.pack_blocks([], 4).shape == (0, 4)
