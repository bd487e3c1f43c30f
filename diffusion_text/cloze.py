"""Cloze scoring (``data.target_start=in_place``): the share of slots written right, beside two
count models of the training split (the most common word behind a slot; ``NeighbourFiller``)."""
import collections

from diffusion_text.data import pipeline, sources


def _slot_pairs(source):
  """(source words, target words) of each record of a word-aligned cloze split."""
  for i in range(len(source)):
    yield pipeline._text(source[i]["src"]).split(), pipeline._text(source[i]["tgt"]).split()


def most_common_blank(source) -> str:
  """The word most often behind a slot (``sources.SLOT``) of a word-aligned cloze split."""
  counts = collections.Counter()
  for src, tgt in _slot_pairs(source):
    counts.update(t for s, t in zip(src, tgt) if s == sources.SLOT)
  return counts.most_common(1)[0][0] if counts else ""


class NeighbourFiller:
  """A count model of a cloze: it writes in a slot the word the training split most often has
  between the same two neighbouring source words (a neighbour may itself be a slot; sentence ends
  are ``<s>`` and ``</s>``), backing off to the same left neighbour, then the same right neighbour,
  then ``most_common_blank``. A context is used once it was seen twice."""

  def __init__(self, source):
    self.counts = [collections.defaultdict(collections.Counter) for _ in range(3)]
    for src, tgt in _slot_pairs(source):
      for k, (s, t) in enumerate(zip(src, tgt)):
        if s == sources.SLOT:
          for table, key in zip(self.counts, self._contexts(src, k)):
            table[key][t] += 1
    self.fallback = most_common_blank(source)

  @staticmethod
  def _contexts(src, k):
    left = src[k - 1] if k > 0 else "<s>"
    right = src[k + 1] if k + 1 < len(src) else "</s>"
    return (left, right), left, right

  def __call__(self, src, k) -> str:
    """The word for slot ``k`` of the source words ``src``."""
    for table, key in zip(self.counts, self._contexts(src, k)):
      c = table.get(key)
      if c and sum(c.values()) >= 2:
        return c.most_common(1)[0][0]
    return self.fallback


def blank_accuracy(srcs, hyps, refs, baseline_word: str, neighbour_filler=None) -> dict:
  """For a cloze (``in_place``): the share of slots whose output word is the reference's word at
  that position (first reference), and the share a filler writing ``baseline_word`` in every slot
  gets (and, with ``neighbour_filler``, the share that count model gets). An output of another
  length than its source counts its slots as wrong."""
  right = base = near = total = 0
  for src, hyp, ref in zip(srcs, hyps, refs):
    s, h, r = src.split(), hyp.split(), ref[0].split()
    for k, w in enumerate(s):
      if w == sources.SLOT and k < len(r):
        total += 1
        right += len(h) == len(s) and h[k] == r[k]
        base += r[k] == baseline_word
        near += neighbour_filler is not None and neighbour_filler(s, k) == r[k]
  out = {"blank_accuracy": right / max(total, 1), "blank_baseline_word": baseline_word,
         "blank_baseline_accuracy": base / max(total, 1), "blanks": total}
  if neighbour_filler is not None:
    out["blank_neighbour_accuracy"] = near / max(total, 1)
  return out
