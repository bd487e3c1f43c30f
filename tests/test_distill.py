"""distill: new combinations of structured sources' fields for the teacher, the slot rerank of its
candidates, and the real references with unfaithful train texts dropped."""
import collections
import json

import pytest

from diffusion_text import distill
from diffusion_text.data import mr
from diffusion_text.errors import UserError

SOURCES = [
    "name : Aromi | Type : pub | food : Thai | area : riverside",
    "name : Zizzi | food : English | price : cheap",
    "name : Aromi | Type : coffee shop | price : high | area : city centre | near : Clare Hall",
    "name : The Mill | Type : pub | food : Thai",
]


def test_recombined_sources_are_new_combinations_of_the_given_fields():
  out = distill.recombine_sources(SOURCES, 40, seed=3)
  assert len(out) == len(set(out)) == 40 and not set(out) & set(SOURCES)
  given = collections.defaultdict(set)
  for s in SOURCES:
    for k, v in mr.strict_fields(s):
      given[k].add(v)
  order = ["name", "Type", "food", "price", "area", "near"]  # by mean position in SOURCES
  for s in out:
    fields = mr.strict_fields(s)
    keys = [k for k, _ in fields]
    assert keys[0] == "name"  # in every source, so in every output
    assert keys == sorted(keys, key=order.index)
    assert all(v in given[k] for k, v in fields)
    assert 2 <= len(fields) - 1 <= 4  # the fewest and most optional fields of SOURCES
  assert distill.recombine_sources(SOURCES, 40, seed=3) == out
  assert distill.recombine_sources(SOURCES, 40, seed=4) != out


def test_recombined_sources_never_say_what_an_excluded_mr_says_in_any_field_order():
  out = distill.recombine_sources(SOURCES, 40, seed=3)
  # the same fields in another order, another case and spacing: still the excluded MR
  reordered = [" |  ".join(reversed(s.upper().split(" | "))) for s in out[:10]]
  again = distill.recombine_sources(SOURCES, 30, seed=3, exclude=reordered)
  assert not {mr.canonical(s) for s in again} & {mr.canonical(s) for s in out[:10]}
  assert len(again) == 30 and again[0] not in out[:10]
  held = distill.heldout_sources(SOURCES, 10, seed=0, ignore=("name",))
  held2 = distill.heldout_sources(SOURCES, 10, seed=0, ignore=("name",), exclude=held[:5])
  assert len(held2) == 10 and not {mr.canonical(s) for s in held2} & {mr.canonical(s) for s in held[:5]}


def test_recombining_unstructured_or_exhausted_sources_is_one_clear_error():
  with pytest.raises(UserError, match="'key : value' fields"):
    distill.recombine_sources(SOURCES + ["a plain sentence"], 3)
  with pytest.raises(UserError, match="new combinations"):
    distill.recombine_sources(["name : A | food : B", "name : A | food : C"], 5)


def test_skeleton_ignores_only_the_named_values():
  a = "name : Aromi | Type : pub | food : Thai | area : riverside"
  b = "name : Zizzi | Type : pub | food : English | area : riverside"
  assert distill.skeleton(a, ("name", "food")) == distill.skeleton(b, ("name", "food"))
  assert distill.skeleton(a, ("name",)) != distill.skeleton(b, ("name",))
  # a key present or absent still makes another skeleton
  assert distill.skeleton(a, ("name", "food")) != distill.skeleton(
      "name : Aromi | Type : pub | area : riverside", ("name", "food"))
  with pytest.raises(UserError, match="'key : value' fields"):
    distill.skeleton("a plain sentence")


def test_heldout_sources_are_new_skeletons_not_only_new_values():
  ignore = ("name", "near")
  out = distill.heldout_sources(SOURCES, 10, seed=0, ignore=ignore)
  seen = {distill.skeleton(s, ignore) for s in SOURCES}
  keys = [distill.skeleton(s, ignore) for s in out]
  assert len(out) == 10 and len(set(keys)) == 10 and not set(keys) & seen
  assert distill.heldout_sources(SOURCES, 10, seed=0, ignore=ignore) == out
  with pytest.raises(UserError, match="held-out combinations"):
    distill.heldout_sources(["name : A | food : B", "name : C | food : D"], 3, seed=0,
                            ignore=("name",))


def test_mentions_values_checks_the_named_keys_case_insensitively():
  src = "name : Aromi | Type : coffee shop | area : city centre"
  assert distill.mentions_values(src, "Aromi is a Coffee Shop in the city centre .",
                                 ("name", "Type", "area", "food"))  # no food given: no check
  assert not distill.mentions_values(src, "Aromi is a pub in the city centre .", ("Type",))
  assert distill.mentions_values(src, "anything", ())


def test_faithful_references_drop_exactly_the_train_texts_with_slot_errors(tmp_path, tfds_dir):
  from diffusion_text import defaults
  from diffusion_text.data import e2e, pipeline
  cfg = defaults.get_config().data
  out = tmp_path / "clean"
  info = distill.faithful_references(cfg, str(out))
  data = pipeline.prepare_sources(cfg)
  pairs = {split: [(pipeline._text(data[split][i]["src"]), pipeline._text(data[split][i]["tgt"]))
                  for i in range(len(data[split]))] for split in ("train", "validation", "test")}
  read = {split: [tuple(json.loads(line).values()) for line in open(out / name)]
          for split, name in distill.SPLIT_FILES.items()}
  wrong = [(s, t) for s, t in pairs["train"] if any(v != "ok" for v in e2e.check(s, t).values())]
  assert 0 < len(wrong) < len(pairs["train"])  # the fixture has both kinds of text
  assert read["train"] == [p for p in pairs["train"] if p not in wrong]  # order kept too
  assert read["validation"] == pairs["validation"] and read["test"] == pairs["test"]
  assert info["unfaithful_dropped"] == len(wrong)
  assert json.load(open(out / distill.INFO_FILE)) == info
  with pytest.raises(UserError, match="exists"):
    distill.faithful_references(cfg, str(out))
