"""``evaluate.e2e_breakdown`` and its main: BLEU by the MR's number of fields, slot values named."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from diffusion_text import evaluate, metrics
from diffusion_text.data import e2e
from diffusion_text.errors import DataError

ROWS = [
    {"src": "name : Aromi | Type : pub | area : riverside",
     "hyp": "Aromi is a pub in the riverside area .",
     "refs": ["Aromi is a pub in the riverside area .", "There is a pub called Aromi ."]},
    {"src": "name : The Eagle | Type : coffee shop | area : city centre",
     "hyp": "The Eagle is a Coffee Shop .",
     "refs": ["The Eagle is a coffee shop in the city centre ."]},
    {"src": "name : Zizzi | food : Italian | near : The Bakers | area : riverside",
     "hyp": "Zizzi serves Italian food near The Bakers by the river .",
     "refs": ["Zizzi serves Italian food near The Bakers in the riverside area ."]},
]


def test_bleu_is_grouped_by_field_count_and_values_are_matched_case_insensitively():
  out = e2e.breakdown(ROWS)
  assert out["inputs"] == 3
  assert {n: g["inputs"] for n, g in out["bleu_by_fields"].items()} == {3: 2, 4: 1}
  want3 = metrics.bleu([r["hyp"] for r in ROWS[:2]], [r["refs"] for r in ROWS[:2]])["bleu"]
  assert out["bleu_by_fields"][3]["bleu"] == pytest.approx(want3)
  assert out["bleu_by_fields"][4]["bleu"] == pytest.approx(
      metrics.bleu([ROWS[2]["hyp"]], [ROWS[2]["refs"]])["bleu"])
  named = {k: (v["inputs"], v["share"]) for k, v in out["value_named"].items()}
  # "Coffee Shop" names "coffee shop"; "by the river" does not name "riverside"
  assert named == {"name": (3, 1.0), "Type": (2, 1.0), "area": (3, 1 / 3), "food": (1, 1.0),
                   "near": (1, 1.0)}
  assert out["words"] == pytest.approx((9 + 7 + 11) / 3)
  assert out["reference_words"] == pytest.approx(((9 + 7) / 2 + 11 + 12) / 3)


def _main(*args):
  return subprocess.run([sys.executable, "-m", "experiments.e2e_breakdown", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_main_writes_the_breakdown_beside_the_results_and_rejects_bad_lines(tmp_path):
  path = tmp_path / "step7_test_ddpm200.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  r = _main("--results", str(path))
  assert r.returncode == 0, r.stderr[-2000:]
  saved = json.load(open(tmp_path / "step7_test_ddpm200_breakdown.json"))
  assert saved["value_named"]["area"]["share"] == pytest.approx(1 / 3)
  assert saved["bleu_by_fields"]["4"]["inputs"] == 1
  path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"src": "x", "hyp": "y"}) + "\n")
  r = _main("--results", str(path), "--out", str(tmp_path / "b.json"))
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1].startswith(f"error: {path}:2: not an evaluation line")
  assert not os.path.exists(tmp_path / "b.json")
  with pytest.raises(DataError, match="not found"):
    evaluate.read_results(str(tmp_path / "missing.jsonl"))
