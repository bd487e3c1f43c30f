"""Packing (source, target) pairs into one sequence for partial-noising seq2seq (DiffuSeq).

Layout of a packed sequence of length L::

    [BOS] source [SEP] target [EOS] PAD ... PAD
          |<- max_src_len ->|     |<--- target region: target_mask = 1 --->|

The source is truncated to ``max_src_len`` tokens (the same rule at training and sampling time, so the
target region a model learned to fill has the same size when it generates); the target gets the rest,
``L - 3 - len(source)`` tokens, so it is never dropped entirely. The target region runs from after SEP
to the end: the model predicts PAD there for unused positions, which is how output length is chosen.
An unconditional example is the special case with no source: ``[BOS] text [EOS] PAD...`` and
``target_mask`` all ones.
"""
from typing import Sequence

import numpy as np

from diffusion_text.data.tokenizers import BOS, EOS, PAD, SEP


def pack(src_ids: Sequence[int], tgt_ids: Sequence[int], max_len: int, max_src_len: int):
  """Returns (ids, target_mask), int32 arrays of shape (max_len,)."""
  if not 1 <= max_src_len <= max_len - 4:
    raise ValueError(f"max_src_len must be in [1, max_len - 4 = {max_len - 4}], got {max_src_len}")
  src = list(src_ids)[:max_src_len]
  tgt = list(tgt_ids)[: max_len - 3 - len(src)]
  seq = [BOS] + src + [SEP] + tgt + [EOS]
  ids = np.full((max_len,), PAD, np.int32)
  ids[: len(seq)] = seq
  mask = np.zeros((max_len,), np.int32)
  mask[len(src) + 2:] = 1
  return ids, mask


def pack_source(src_ids: Sequence[int], max_len: int, max_src_len: int):
  """A sampling input: the packed source with an all-PAD target region (its values are noised)."""
  ids, mask = pack(src_ids, [], max_len, max_src_len)
  ids[mask == 1] = PAD
  return ids, mask


def unpack(ids: Sequence[int]):
  """(source ids, target ids) of a packed sequence; the target stops at its first EOS."""
  ids = list(np.asarray(ids).tolist())
  sep = ids.index(SEP) if SEP in ids else 0
  src = [i for i in ids[1:sep] if i != PAD]
  tgt = []
  for i in ids[sep + 1:]:
    if i == EOS:
      break
    tgt.append(i)
  return src, tgt
