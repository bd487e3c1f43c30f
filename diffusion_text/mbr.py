"""Minimum Bayes risk decoding over several samples per input (DiffuSeq, Gong et al. 2023, sec. 4.4).

Among |S| candidates, pick the one with the highest mean sentence BLEU (sacrebleu, effective order)
against the other candidates: the consensus of the samples. With a cost per candidate (E2E: its slot
errors, ``data.e2e.errors``), only the candidates of least cost compete: a rerank, then MBR.
"""
from typing import Optional, Sequence

import numpy as np


def mbr_select(candidates: Sequence[str], cost: Optional[Sequence[float]] = None) -> int:
  """Index of the candidate that agrees most with the others (ties: the first); with ``cost``, of
  the candidates of least cost the one that agrees most with all the others."""
  pool = (list(range(len(candidates))) if cost is None
          else [i for i, c in enumerate(cost) if c == min(cost)])
  if len(pool) == 1:
    return pool[0]
  from sacrebleu.metrics import BLEU
  metric = BLEU(effective_order=True)
  utility = [np.mean([metric.sentence_score(candidates[i], [o]).score
                      for j, o in enumerate(candidates) if j != i]) for i in pool]
  return pool[int(np.argmax(utility))]


def mbr_decode(samples_per_input: Sequence[Sequence[str]],
               costs: Optional[Sequence[Sequence[float]]] = None) -> list[str]:
  costs = costs or [None] * len(samples_per_input)
  return [c[mbr_select(c, k)] for c, k in zip(samples_per_input, costs)]
