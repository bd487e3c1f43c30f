"""Text metrics through maintained libraries, as evaluators by name.

* ``bleu``: corpus BLEU from sacrebleu (13a tokenization, multi-reference when an input has several
  references; the signature is returned with the score).
* ``rouge_l``: mean ROUGE-L F1 from rouge-score, best over an input's references.
* ``sentence_bleu_diffuseq``: DiffuSeq's number for comparison with its paper: nltk ``sentence_bleu``
  with smoothing method 4 on whitespace tokens, averaged over inputs (all references passed).
* ``dist_1``: distinct unigrams / all unigrams over every output.
* ``mean_len``: mean output length in whitespace tokens (with ``ref_len`` for the references).
* ``self_bleu`` and ``div_4`` (need several samples per input): mean sacrebleu sentence BLEU of each
  sample against the other samples of its input (lower = more diverse), and distinct 4-grams / all
  4-grams within an input's samples, averaged over inputs (DiffuSeq's diversity measures).
"""
from typing import Callable, Sequence

import numpy as np


def _ref_streams(references: Sequence[Sequence[str]]):
  n = max(len(r) for r in references)
  return [[r[i] if i < len(r) else None for r in references] for i in range(n)]


def bleu(hyps: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
  from sacrebleu.metrics import BLEU
  metric = BLEU()
  score = metric.corpus_score(list(hyps), _ref_streams(references))
  return {"bleu": score.score, "bleu_signature": str(metric.get_signature())}


def rouge_l(hyps, references) -> dict:
  from rouge_score import rouge_scorer
  scorer = rouge_scorer.RougeScorer(["rougeL"])
  best = [max(scorer.score(r, h)["rougeL"].fmeasure for r in refs)
          for h, refs in zip(hyps, references)]
  return {"rouge_l": 100.0 * float(np.mean(best))}


def sentence_bleu_diffuseq(hyps, references) -> dict:
  from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
  smooth = SmoothingFunction().method4
  s = [sentence_bleu([r.split() for r in refs], h.split(), smoothing_function=smooth)
       for h, refs in zip(hyps, references)]
  return {"sentence_bleu_diffuseq": 100.0 * float(np.mean(s))}


def _ngrams(tokens, n):
  return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def dist_n(texts: Sequence[str], n: int = 1) -> float:
  grams = [g for t in texts for g in _ngrams(t.split(), n)]
  return len(set(grams)) / max(len(grams), 1)


def dist_1(hyps, references=None) -> dict:
  return {"dist_1": dist_n(hyps, 1)}


def mean_len(hyps, references=None) -> dict:
  out = {"mean_len": float(np.mean([len(h.split()) for h in hyps]))}
  if references is not None:
    out["ref_len"] = float(np.mean([np.mean([len(r.split()) for r in refs]) for refs in references]))
  return out


def length_distribution(hyps, references=None) -> dict:
  """Output lengths (words) against the references: quantiles of both, and the mean signed gap to
  each input's closest reference length (0 = the model picks plausible lengths; < 0 = too short)."""
  q = (10, 50, 90)
  h = np.array([len(x.split()) for x in hyps])
  out = {f"len_p{p}": float(np.percentile(h, p)) for p in q}
  out["len_std"] = float(h.std())
  if references is not None:
    r = np.array([len(x.split()) for refs in references for x in refs])
    out.update({f"ref_len_p{p}": float(np.percentile(r, p)) for p in q})
    out["ref_len_std"] = float(r.std())
    gaps = [hl - min((len(x.split()) for x in refs), key=lambda rl: abs(rl - hl))
            for hl, refs in zip(h, references)]
    out["len_gap_to_closest_ref"] = float(np.mean(gaps))
  return out


def self_bleu(samples_per_input: Sequence[Sequence[str]]) -> dict:
  from sacrebleu.metrics import BLEU
  metric = BLEU(effective_order=True)
  scores = []
  for cands in samples_per_input:
    for i, c in enumerate(cands):
      others = [o for j, o in enumerate(cands) if j != i]
      if others:
        scores.append(metric.sentence_score(c, others).score)
  return {"self_bleu": float(np.mean(scores)) if scores else float("nan")}


def div_4(samples_per_input) -> dict:
  return {"div_4": float(np.mean([dist_n(c, 4) for c in samples_per_input]))}


CORPUS_METRICS: dict[str, Callable] = {
    "bleu": bleu, "rouge_l": rouge_l, "sentence_bleu_diffuseq": sentence_bleu_diffuseq,
    "dist_1": dist_1, "mean_len": mean_len, "length_distribution": length_distribution,
}
DIVERSITY_METRICS: dict[str, Callable] = {"self_bleu": self_bleu, "div_4": div_4}


def evaluate_texts(hyps, references, samples_per_input=None, names=None) -> dict:
  """All (or the named) metrics of outputs ``hyps`` against per-input ``references``."""
  out = {}
  for name, fn in CORPUS_METRICS.items():
    if names is None or name in names:
      out.update(fn(hyps, references))
  if samples_per_input is not None and len(samples_per_input[0]) > 1:
    for name, fn in DIVERSITY_METRICS.items():
      if names is None or name in names:
        out.update(fn(samples_per_input))
  return out
