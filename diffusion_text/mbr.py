"""Minimum Bayes risk decoding over several samples per input (DiffuSeq, Gong et al. 2023, sec. 4.4).

Among |S| candidates, pick the one with the highest mean sentence BLEU (sacrebleu, effective order)
against the other candidates: the consensus of the samples.
"""
from typing import Sequence

import numpy as np


def mbr_select(candidates: Sequence[str]) -> int:
  """Index of the candidate that agrees most with the others (ties: the first)."""
  if len(candidates) == 1:
    return 0
  from sacrebleu.metrics import BLEU
  metric = BLEU(effective_order=True)
  utility = [np.mean([metric.sentence_score(c, [o]).score
                      for j, o in enumerate(candidates) if j != i])
             for i, c in enumerate(candidates)]
  return int(np.argmax(utility))


def mbr_decode(samples_per_input: Sequence[Sequence[str]]) -> list[str]:
  return [c[mbr_select(c)] for c in samples_per_input]
