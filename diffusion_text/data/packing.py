"""Packing (source, target) pairs into one sequence for partial-noising seq2seq (DiffuSeq).

Three layouts of a packed sequence of length L (``target_start``)::

    after_source:  [BOS] source [SEP] target [EOS] PAD ... PAD
    fixed:         PAD .. PAD [BOS] source [SEP] target [EOS] PAD ... PAD
    aligned:       [BOS] source PAD .. PAD [SEP] target [EOS] PAD ... PAD
                   |<---- max_src_len + 2 ---->|<------ target region ------>|

In ``after_source`` (DiffuSeq's) the target region starts right after the source, so where word k of
the output sits shifts with the source's length (over about 25 positions on E2E): at high noise the
denoiser must first find SEP before it can name word k. ``fixed`` right-aligns the source before SEP,
so SEP always sits at ``max_src_len + 1`` and the target always starts at ``max_src_len + 2``, as an
autoregressive decoder's first target position does. ``aligned`` pins both ends: the source starts
at position 1 and the target at ``max_src_len + 2`` (PAD between the source and SEP), so source token
k and target token k are always ``max_src_len + 1`` positions apart, whatever the source's length.

``in_place`` has no source region: for a source that is the target with some words replaced by a
slot word (``rt_cloze``), the sequence is ``[BOS] target [EOS] PAD ...`` and only the slots'
positions are noised and predicted (``target_mask`` 1 there); the given words stay clean, as a
DiffuSeq source does. Source and target must have one token per word (the word tokenizer), and the
output has the source's length.

The source is truncated to ``max_src_len`` tokens (the same rule at training and sampling time, so the
target region a model learned to fill has the same size when it generates). The target region runs
from after SEP to the end: the model predicts PAD there for unused positions, which is how output
length is chosen. An unconditional example is the special case with no source: ``[BOS] text [EOS]
PAD...`` and ``target_mask`` all ones.
"""
from typing import Optional, Sequence

import numpy as np

from diffusion_text.data.tokenizers import BOS, EOS, PAD, SEP

TARGET_STARTS = ("after_source", "fixed", "aligned", "in_place")
SOURCE_REGION_STARTS = ("after_source", "fixed", "aligned")  # the source has its own positions
FIXED_STARTS = ("fixed", "aligned")  # the target starts at max_src_len + 2


def pack(src_ids: Sequence[int], tgt_ids: Sequence[int], max_len: int, max_src_len: int,
         target_start: str = "after_source", slot_id: Optional[int] = None):
  """Returns (ids, target_mask), int32 arrays of shape (max_len,). ``slot_id`` (``in_place`` only)
  is the id of the source's slot word."""
  if target_start == "in_place":
    return _pack_in_place(src_ids, tgt_ids, max_len, slot_id)
  if not 1 <= max_src_len <= max_len - 4:
    raise ValueError(f"max_src_len must be in [1, max_len - 4 = {max_len - 4}], got {max_src_len}")
  if target_start not in TARGET_STARTS:
    raise ValueError(f"unknown target_start {target_start!r}; choose one of {TARGET_STARTS}")
  src = list(src_ids)[:max_src_len]
  offset = max_src_len - len(src) if target_start == "fixed" else 0  # left PAD before BOS
  gap = max_src_len - len(src) if target_start == "aligned" else 0  # PAD before SEP
  tgt = list(tgt_ids)[: max_len - 3 - len(src) - offset - gap]
  seq = [BOS] + src + [PAD] * gap + [SEP] + tgt + [EOS]
  ids = np.full((max_len,), PAD, np.int32)
  ids[offset: offset + len(seq)] = seq
  mask = np.zeros((max_len,), np.int32)
  mask[offset + gap + len(src) + 2:] = 1
  return ids, mask


def _pack_in_place(src_ids, tgt_ids, max_len: int, slot_id: Optional[int]):
  if slot_id is None:
    raise ValueError("target_start='in_place' needs the slot word's id")
  src = list(src_ids)[: max_len - 2]
  tgt = list(tgt_ids)[: max_len - 2]
  if tgt and len(tgt) != len(src):
    raise ValueError(f"in_place: source and target must have one token per word, got "
                     f"{len(src)} and {len(tgt)} tokens")
  seq = [BOS] + (tgt or src) + [EOS]
  ids = np.full((max_len,), PAD, np.int32)
  ids[: len(seq)] = seq
  mask = np.zeros((max_len,), np.int32)
  mask[1: 1 + len(src)] = np.asarray(src, np.int64) == slot_id
  return ids, mask


def pack_source(src_ids: Sequence[int], max_len: int, max_src_len: int,
                target_start: str = "after_source", slot_id: Optional[int] = None):
  """A sampling input: the packed source with an all-PAD target region (its values are noised)."""
  ids, mask = pack(src_ids, [], max_len, max_src_len, target_start, slot_id)
  ids[mask == 1] = PAD
  return ids, mask


def unpack(ids: Sequence[int]):
  """(source ids, target ids) of a packed sequence of either layout; the target stops at its
  first EOS."""
  ids = list(np.asarray(ids).tolist())
  sep = ids.index(SEP) if SEP in ids else 0
  src = [i for i in ids[:sep] if i not in (PAD, BOS)]
  tgt = []
  for i in ids[sep + 1:]:
    if i == EOS:
      break
    tgt.append(i)
  return src, tgt


def pack_blocks(texts_ids: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
  """Block packing for unconditional training (Diffusion-LM's ``padding_mode block``): the texts
  joined as ``[BOS] t1 [EOS] [BOS] t2 [EOS] ...`` and cut into rows of ``max_len``, (N, max_len)
  int32 with no PAD; the tail that does not fill a row is dropped. A text may straddle two rows."""
  if not texts_ids:
    return np.zeros((0, max_len), np.int32)
  stream = np.concatenate([np.asarray([BOS, *t, EOS], np.int32) for t in texts_ids])
  n = len(stream) // max_len
  return stream[: n * max_len].reshape(n, max_len)


def split_blocks(ids: Sequence[int]) -> list:
  """The complete texts of a block: the ids strictly between each BOS and the next EOS, for spans
  that reach an EOS before another BOS or the row's end (fragments cut at either edge are not
  texts). Each text is a list of ids."""
  row = list(np.asarray(ids).tolist())
  out = []
  for a, i in enumerate(row):
    if i != BOS:
      continue
    b = next((k for k in range(a + 1, len(row)) if row[k] in (EOS, BOS)), None)
    if b is not None and row[b] == EOS:
      out.append(row[a + 1: b])
  return out
