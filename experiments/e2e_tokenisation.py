r"""What E2E's test tokenisation costs: the test references split negations as ``is n't``, the
train and dev files (Diffusion-LM's) as ``isn 't``; a model writes the train style.

    DIFFUSION_TEXT_DATA_DIR=../shared/data python -m experiments.e2e_tokenisation

For every test MR with two or more references, its first reference rewritten in the train style is
scored (sacrebleu corpus BLEU) against the others, as distributed and rewritten in the train style
too. Prints both as JSON.
"""
import collections
import json
import os
import re

from diffusion_text import metrics
from diffusion_text.data import sources
from experiments import common

TEST_FILE = os.path.join("e2e", "diffusion_lm_format", "src1_test.txt")


def train_style(text: str) -> str:
  """``is n't`` -> ``isn 't`` (the train and dev files' split of a negation)."""
  return re.sub(r"(\w+) n't\b", r"\1n 't", text)


def run():
  path = os.path.join(sources.default_source_dir(), TEST_FILE)
  if not os.path.exists(path):
    raise common.UserError(f"{path} not found: set DIFFUSION_TEXT_DATA_DIR to the E2E data")
  groups = collections.OrderedDict()
  with open(path, encoding="utf-8") as f:
    for line in f:
      src, tgt = line.rstrip("\n").split("||", 1)
      groups.setdefault(src.strip(), []).append(tgt.strip())
  multi = [r for r in groups.values() if len(r) > 1]
  hyps = [train_style(r[0]) for r in multi]
  res = {"test_mrs": len(multi),
         "references_with_split_negation": sum("n't" in t for r in groups.values() for t in r),
         "bleu_vs_test_as_distributed": metrics.bleu(hyps, [r[1:] for r in multi])["bleu"],
         "bleu_vs_test_in_train_style": metrics.bleu(
             hyps, [[train_style(t) for t in r[1:]] for r in multi])["bleu"]}
  print(json.dumps(res, indent=2))


if __name__ == "__main__":
  common.run_app(run)
