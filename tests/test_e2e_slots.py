"""``data.e2e``: slot errors of E2E texts (fields missing, wrong, added, repeated), texts cut off."""
import pytest

from diffusion_text.data import e2e

WATERMAN = ("name : The Waterman | Type : restaurant | food : Indian | price : high | area : city centre"
            " | family friendly : yes | near : Raja Indian Cuisine")


def test_a_left_out_field_is_missing_and_venue_names_say_nothing_else():
  text = ("The Waterman is a high priced Indian restaurant located in the city centre near Raja "
          "Indian Cuisine .")
  assert e2e.check(WATERMAN, text) == {
      "name": "ok", "near": "ok", "Type": "ok", "food": "ok", "price": "ok",
      "area": "ok", "family friendly": "missing"}
  # "Raja Indian Cuisine" is a venue: it says no Indian food, and "Café Rouge" no coffee shop
  src = "name : Zizzi | Type : pub | food : English | near : Café Rouge"
  assert e2e.check(src, "Zizzi is a pub near Café Rouge serving English food .") == {
      "name": "ok", "near": "ok", "Type": "ok", "food": "ok"}
  assert e2e.check("name : Zizzi | food : English", "Zizzi is near Raja Indian Cuisine .") == {
      "name": "ok", "near": "added", "food": "missing"}


@pytest.mark.parametrize("src, text, field, want", [
    # paraphrases of one value class, in the E2E files' tokenisation
    ("name : A | price : £ 20 - 25", "A has prices of £ 20 - 25 .", "price", "ok"),
    ("name : A | price : £ 20 - 25", "A is moderately priced .", "price", "ok"),
    ("name : A | price : less than £ 20", "A is cheap .", "price", "ok"),
    ("name : A | price : cheap", "A is not expensive , prices are less than £ 20 .", "price",
     "wrong"),  # "not expensive" is not read as a negation: the rule sees a high price
    ("name : A | price : high", "A is inexpensive .", "price", "wrong"),
    ("name : A | customer rating : 5 out of 5", "A is rated 5 out of 5 stars .", "customer rating",
     "ok"),
    ("name : A | customer rating : high", "A has a high customer rating .", "customer rating", "ok"),
    ("name : A | customer rating : average", "A has a low rating .", "customer rating", "wrong"),
    ("name : A | area : riverside", "A is by the river .", "area", "ok"),
    ("name : A | area : riverside", "A is in the riverside area by the river .", "area", "repeated"),
    ("name : A | area : riverside", "A is in the city centre .", "area", "wrong"),
    ("name : A | Type : coffee shop", "A is a pub .", "Type", "wrong"),
    ("name : A | Type : pub", "A is a pub and restaurant .", "Type", "ok"),  # generic restaurant
    ("name : A", "A is a cheap pub .", "price", "added"),
    ("name : A", "A is a restaurant .", "Type", None),
    ("name : A | family friendly : no", "A is not family - friendly .", "family friendly", "ok"),
    ("name : A | family friendly : yes", "A is n't kid friendly .", "family friendly", "wrong"),
    ("name : A | family friendly : yes", "A is not cheap but is kid friendly .", "family friendly",
     "ok"),  # the negation belongs to the other clause
    ("name : A | family friendly : no", "A is for adults only .", "family friendly", "ok"),
    ("name : A | food : Thai", "A serves Thai food .", "food", "ok"),  # no rule: word for word
    ("name : A | near : The Bakers", "A is near The Sorrento .", "near", "missing"),
    ("name : A | near : The Bakers", "A is near Burger King .", "near", "wrong"),
    ("name : A | near : The Bakers", "A , near The Bakers , is near The Bakers .", "near",
     "repeated"),
    ("name : A | near : The Bakers", "A is a pub near The Bakers . A is cheap .", "name", "ok"),
])
def test_field_outcomes(src, text, field, want):
  assert e2e.check(src, text).get(field) == want


def test_cut_off_unstopped_and_doubled_words():
  assert e2e.cut_off("It is not kid friendly and")
  assert e2e.cut_off("It is not kid friendly and .")
  assert e2e.cut_off("The Vaults is located near Express by Holiday Inn in")
  assert e2e.cut_off("The Vaults is a pub ,") and e2e.cut_off("")
  assert not e2e.cut_off("The Vaults is a pub .") and not e2e.cut_off("The Vaults is a pub")
  assert e2e.no_final_stop("The Vaults is a pub") and not e2e.no_final_stop("The Vaults is a pub !")
  assert e2e.doubled_word("Aromi serves Fast food food .")
  assert not e2e.doubled_word("Aromi serves Fast food . Food is cheap .")


def test_score_counts_errors_over_mr_fields():
  rows = [{"src": WATERMAN, "hyp": "The Waterman is an expensive Indian restaurant in the city "
                                   "centre near Raja Indian Cuisine . It is kid friendly ."},
          {"src": "name : Aromi | Type : pub | area : riverside", "hyp": "Aromi is a cheap pub pub in"},
          {"src": "name : Aromi | Type : pub", "hyp": "Aromi is a pub . It is a good pub ."}]
  out = e2e.score(rows)
  # 7 + 3 + 2 MR fields; errors: row 2 area missing and price added ("pub pub" is one mention, a
  # doubled word), row 3 Type repeated
  assert out["mr_fields"] == 12
  assert (out["missing"], out["wrong"], out["added"], out["repeated"]) == (1, 0, 1, 1)
  assert out["slot_error_rate"] == pytest.approx(3 / 12)
  assert out["all_fields_right"] == pytest.approx(1 / 3)
  assert out["cut_off"] == pytest.approx(1 / 3) and out["no_final_stop"] == pytest.approx(1 / 3)
  assert out["doubled_word"] == pytest.approx(1 / 3)
  assert out["per_field"]["area"] == {"ok": 1, "missing": 1}
  assert e2e.is_e2e([WATERMAN, "name : Aromi"]) and not e2e.is_e2e(["a sentence", WATERMAN])
  assert not e2e.is_e2e(["name : A | colour : red"]) and not e2e.is_e2e([])
  with pytest.raises(ValueError, match="colour"):
    e2e.check("name : A | colour : red", "A is red .")


@pytest.mark.full_data
def test_the_rules_agree_with_a_hand_check_of_dev_texts(full_data_dir):
  """Two samples of 100 E2E dev references labelled by hand (docs/results/faithfulness/): the
  first was read while the rules were written, the second only after; on the second the rules
  take >= 98% of the per-field decisions and >= 95% of the every-field-right calls as the person
  did."""
  import json
  from conftest import ROOT
  with open(full_data_dir / "e2e" / "diffusion_lm_format" / "src1_valid.txt", encoding="utf-8") as f:
    dev = [line.rstrip("\n").split("||") for line in f]
  path = ROOT / "docs" / "results" / "faithfulness" / "hand_dev_b.jsonl"
  labels = [json.loads(line) for line in open(path)]
  rows = [{"src": dev[lab["line"]][0].strip(), "hyp": dev[lab["line"]][1].strip()} for lab in labels]
  res = e2e.agreement(rows, labels)
  assert res["texts"] == 100 and res["decisions"] == 557
  assert res["agreement"] >= 0.98 and res["all_fields_right_agreement"] >= 0.95
  assert res["cut_off_agreement"] == 1.0


def test_main_scores_results_and_data_files_alike(tmp_path):
  import json
  import os
  import subprocess
  import sys
  from conftest import ROOT
  rows = [{"src": WATERMAN, "hyp": "The Waterman is an Indian restaurant ."},
          {"src": "name : Aromi | Type : pub", "hyp": "Aromi is a cheap pub in"}]
  data = tmp_path / "src1_valid.txt"
  data.write_text("".join(f"{r['src']}||{r['hyp']} \n" for r in rows))
  results = tmp_path / "step1_validation.jsonl"
  results.write_text("".join(json.dumps({**r, "refs": ["x"]}) + "\n" for r in rows))
  for path in (data, results):
    r = subprocess.run([sys.executable, "-m", "experiments.slot_errors", "--texts", str(path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.load(open(os.path.splitext(path)[0] + "_slots.json"))
    assert {k: v for k, v in saved.items() if k not in ("texts", "num_texts")} == e2e.score(rows)
  results.write_text(json.dumps({"src": "name : Aromi"}) + "\n")
  r = subprocess.run([sys.executable, "-m", "experiments.slot_errors", "--texts", str(results),
                      "--out", str(tmp_path / "bad.json")], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(
      f"error: {results}:1: neither")
  assert not os.path.exists(tmp_path / "bad.json")


def test_slot_errors_rerank_samples_before_mbr():
  from diffusion_text import mbr
  src = "name : Aromi | Type : pub | area : riverside"
  good = "Aromi is a pub in the riverside area ."
  cands = ["Aromi is a pub in", "Aromi is a coffee shop .", good, "Aromi is a pub in the city ."]
  costs = [e2e.errors(src, c) for c in cands]
  assert costs == [2, 2, 0, 1]  # area missing + cut off; Type wrong + area missing; -; area wrong
  assert mbr.mbr_select(cands, costs) == 2
  # without costs the consensus wins (the city text shares most with the others); among tied
  # least costs the consensus of the tied ones
  assert mbr.mbr_select(cands) == 3 and mbr.mbr_select(cands, [2, 2, 1, 1]) == 3
  assert mbr.mbr_select(cands, [2, 2, 1, 3]) == 2
  assert mbr.mbr_decode([cands, ["a b", "a b c", "a b"]], [costs, [1, 0, 1]]) == [good, "a b c"]


def test_rerank_keeps_the_first_candidate_with_fewest_slot_errors():
  src = "name : Aromi | Type : pub | area : riverside"
  said_all = "Aromi is a pub by the riverside ."
  no_area = "Aromi is a pub ."
  also_all = "Aromi is a riverside pub ."
  assert e2e.rerank([src], [[no_area, said_all, also_all]]) == [said_all]
  assert e2e.rerank([src], [[also_all, said_all]]) == [also_all]  # a tie keeps the first
  assert e2e.rerank([src, src], [[no_area], [no_area, said_all]]) == [no_area, said_all]


def test_anchor_groups_name_one_group_per_field():
  groups = e2e.anchor_groups("name : <name> | Type : coffee shop | price : <price> moderate | "
                             "customer rating : 5 out of 5 | food : Italian | near : <near>")
  assert groups == [["<name>", "<name:lower>"], ["coffee"],
                    ["<price>", "<price:lower>", "moderate", "moderately", "average", "25"],
                    ["high", "highly", "5"], ["Italian"], ["<near>", "<near:lower>"]]
