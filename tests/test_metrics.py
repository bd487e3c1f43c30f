import math

import numpy as np

import pytest

from diffusion_text import mbr, metrics


def test_bleu_perfect_and_multi_reference():
  refs = [["the cat sat on the mat", "a cat was on the mat"], ["there is a dog in the garden"]]
  perfect = metrics.bleu(["the cat sat on the mat", "there is a dog in the garden"], refs)["bleu"]
  assert perfect == pytest.approx(100)
  # The hypothesis matches only the second reference of input 0: multi-reference still gives 100.
  assert metrics.bleu(["a cat was on the mat", "there is a dog in the garden"],
                      refs)["bleu"] == pytest.approx(100)
  single = metrics.bleu(["a cat was on the mat", "there is a dog in the garden"],
                        [[r[0]] for r in refs])["bleu"]
  assert single < 100
  assert "nrefs:var" in metrics.bleu(["x", "y"], [["x", "y"], ["y"]])["bleu_signature"]


def test_bleu_hand_checked():
  # hyp "the cat is on the mat" vs ref "the cat is on a mat": clipped n-gram precisions
  # 5/6, 3/5, 2/4, 1/3, brevity penalty 1 -> BLEU = 100 * (5/6 * 3/5 * 1/2 * 1/3) ** (1/4).
  got = metrics.bleu(["the cat is on the mat"], [["the cat is on a mat"]])["bleu"]
  assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25)
  assert metrics.bleu(["a b c d"], [["w x y z"]])["bleu"] == pytest.approx(0)


def test_rouge_l_best_reference():
  r = metrics.rouge_l(["the cat sat"], [["a dog ran", "the cat sat"]])["rouge_l"]
  assert r == pytest.approx(100.0)
  # LCS of "the cat sat" and "the big cat" is "the cat": P = R = 2/3 -> F1 = 2/3.
  assert metrics.rouge_l(["the cat sat"], [["the big cat"]])["rouge_l"] == pytest.approx(200 / 3)


def test_diversity_and_length():
  assert metrics.dist_n(["a a a a"], 1) == 0.25
  assert metrics.dist_n(["a b", "c d"], 1) == 1.0
  assert metrics.mean_len(["a b", "c d e f"], [["x"], ["y z"]]) == {"mean_len": 3.0, "ref_len": 1.5}
  same = metrics.self_bleu([["the cat sat on the mat"] * 3])["self_bleu"]
  diff = metrics.self_bleu([["the cat sat on the mat", "a dog ran in a park", "birds fly high up"]])
  assert same == pytest.approx(100) and diff["self_bleu"] < 20
  assert metrics.div_4([["a b c d e", "a b c d e"]])["div_4"] == 0.5


def test_diffuseq_sentence_bleu():
  s = metrics.sentence_bleu_diffuseq(["the cat sat on the mat"], [["the cat sat on the mat"]])
  assert s["sentence_bleu_diffuseq"] == pytest.approx(100)


def test_mbr_picks_the_consensus():
  cands = ["the cat sat on the mat", "a dog barked loudly today", "the cat sat on a mat",
           "the cat sat on the rug"]
  assert mbr.mbr_select(cands) == 0
  assert mbr.mbr_select(["only one"]) == 0
  assert mbr.mbr_decode([cands, ["x y"]]) == ["the cat sat on the mat", "x y"]


def test_evaluate_texts_all_metrics():
  out = metrics.evaluate_texts(["a b c d"], [["a b c d"]], [["a b c d", "a b c e"]])
  assert {"bleu", "rouge_l", "sentence_bleu_diffuseq", "dist_1", "mean_len", "self_bleu",
          "div_4"} <= set(out)
  assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())


def test_length_distribution_against_references():
  hyps = ["a b", "a b c d e f", "a b c d"]
  refs = [["x y z"], ["x y", "x y z w v u w"], ["x y z w"]]
  out = metrics.length_distribution(hyps, refs)
  assert out["len_p50"] == 4.0 and out["ref_len_p50"] == 3.5  # refs: 3, 2, 7, 4
  # closest reference lengths 3, 7 (|6-7| < |6-2|), 4: gaps -1, -1, 0
  np.testing.assert_allclose(out["len_gap_to_closest_ref"], -2 / 3)
  assert "length_distribution" in metrics.CORPUS_METRICS
