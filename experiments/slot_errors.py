r"""Slot errors (``data/e2e.py``) of E2E texts: an evaluation's results, or a data file's references.

    python -m experiments.slot_errors --texts runs/e2e/eval/step4000_test_ddpm200_clamp_collapse.jsonl
    python -m experiments.slot_errors --texts ../shared/data/e2e/diffusion_lm_format/src1_valid.txt

``--texts`` is a ``.jsonl`` with ``src`` and ``hyp`` per line (what ``experiments.evaluate`` writes)
or a Diffusion-LM E2E file of ``MR||text`` lines. Prints the scores as JSON and writes them to
``--out`` (default: beside ``--texts``, ``_slots.json``).
"""
import json
import os

from absl import flags

from diffusion_text.data import e2e
from experiments import common

_TEXTS = flags.DEFINE_string("texts", None, "Results .jsonl or a Diffusion-LM MR||text file.")
_OUT = flags.DEFINE_string("out", None, "Output .json path (default: beside --texts).")
flags.mark_flags_as_required(["texts"])


def read_rows(path: str) -> list[dict]:
  """(src, hyp) rows of a results ``.jsonl`` or of an ``MR||text`` file."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      if "||" in line and not line.lstrip().startswith("{"):
        src, hyp = line.rstrip("\n").split("||", 1)
        rows.append({"src": src.strip(), "hyp": hyp.strip()})
        continue
      try:
        obj = json.loads(line)
        rows.append({"src": obj["src"], "hyp": obj["hyp"]})
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise common.UserError(f"{path}:{n}: neither 'MR||text' nor JSON with 'src' and 'hyp' "
                               f"({e!r})") from e
  if not rows:
    raise common.UserError(f"{path} holds no texts")
  return rows


def run():
  if not os.path.isfile(_TEXTS.value):
    raise common.UserError(f"--texts {_TEXTS.value}: not found")
  stem = os.path.splitext(_TEXTS.value)[0]
  out = _OUT.value or stem + "_slots.json"
  common.check_out("--out", out)
  rows = read_rows(_TEXTS.value)
  if not e2e.is_e2e([r["src"] for r in rows]):
    raise common.UserError(f"{_TEXTS.value}: the sources are not E2E MRs")
  text = json.dumps({"texts": _TEXTS.value, "num_texts": len(rows), **e2e.score(rows)}, indent=2)
  common.write_atomic(out, text + "\n")
  print(text)


if __name__ == "__main__":
  common.run_app(run)
