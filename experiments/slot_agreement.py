r"""Agreement of the E2E slot-error rules (``data/e2e.py``) with a person's labels of dev texts.

    python -m experiments.slot_agreement --labels docs/results/faithfulness/hand_dev_b.jsonl

A labels file holds one line per text: ``line`` (the 0-based line of the dev file
``e2e/diffusion_lm_format/src1_valid.txt`` under ``$DIFFUSION_TEXT_DATA_DIR``, whose MR and text
were labelled), an outcome per MR field (``ok``, ``missing``, ``wrong``, ``added``, ``repeated`` or
``absent``) and ``cut_off``. Prints the agreement as JSON and writes it to ``--out``.
"""
import json
import os

from absl import flags

from diffusion_text.data import e2e, sources
from experiments import common

_LABELS = flags.DEFINE_string("labels", None, "JSON Lines of hand labels (see the docstring).")
_OUT = flags.DEFINE_string("out", None, "Output .json path (default: beside --labels).")
flags.mark_flags_as_required(["labels"])

DEV_FILE = os.path.join("e2e", "diffusion_lm_format", "src1_valid.txt")


def run():
  out = _OUT.value or _LABELS.value.removesuffix(".jsonl") + "_agreement.json"
  common.check_out("--out", out)
  path = os.path.join(sources.default_source_dir(), DEV_FILE)
  if not os.path.exists(path):
    raise common.UserError(f"{path} not found: set DIFFUSION_TEXT_DATA_DIR to the E2E data")
  with open(path, encoding="utf-8") as f:
    dev = [line.rstrip("\n").split("||") for line in f]
  try:
    labels = [json.loads(line) for line in open(_LABELS.value, encoding="utf-8")]
    rows = [{"src": dev[lab["line"]][0].strip(), "hyp": dev[lab["line"]][1].strip()}
            for lab in labels]
    res = e2e.agreement(rows, labels)
  except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
    raise common.UserError(f"{_LABELS.value}: not a labels file ({e!r})") from e
  text = json.dumps({"labels": _LABELS.value, **res}, indent=2)
  common.write_atomic(out, text + "\n")
  print(text)


if __name__ == "__main__":
  common.run_app(run)
