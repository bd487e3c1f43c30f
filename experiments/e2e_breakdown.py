r"""Take an E2E MR->text evaluation apart: BLEU by the MR's number of fields, the share of outputs
that name each word-for-word slot value (name, near, food, venue type, area), output and reference
lengths.

    python -m experiments.e2e_breakdown --results runs/e2e/eval/step4000_test_ddpm200_clamp_collapse.jsonl

Reads the ``.jsonl`` that ``experiments.evaluate`` writes beside its ``.json``; prints the breakdown
as JSON and writes it to ``--out`` (default: the results path with ``_breakdown.json``).
"""
import json

from absl import flags

from diffusion_text import evaluate
from diffusion_text.data import e2e
from experiments import common

_RESULTS = flags.DEFINE_string("results", None, "An evaluation's per-input .jsonl file.")
_OUT = flags.DEFINE_string("out", None, "Output .json path (default: beside --results).")
flags.mark_flags_as_required(["results"])


def run():
  out = _OUT.value or _RESULTS.value.removesuffix(".jsonl") + "_breakdown.json"
  common.check_out("--out", out)
  res = dict(results=_RESULTS.value, **e2e.breakdown(evaluate.read_results(_RESULTS.value)))
  text = json.dumps(res, indent=2)
  common.write_atomic(out, text + "\n")
  print(text)


if __name__ == "__main__":
  common.run_app(run)
