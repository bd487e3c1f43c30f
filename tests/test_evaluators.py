"""The evaluator registry: which options reach which evaluator, and the names of their files."""
import types

import ml_collections
import pytest

from diffusion_text import evaluators

OPTIONS = dict(split="test", num_inputs=None, mbr_samples=2, seed=0, sampler=None, steps=5,
               clamp=None, lm_teacher=None, nll_t=4, t0=[1, 10])


def test_each_evaluator_takes_only_the_options_it_names_and_none_means_its_default():
  assert evaluators.options_for("loss", OPTIONS) == {"split": "test"}
  assert evaluators.options_for("nll", OPTIONS) == {"split": "test", "seed": 0, "nll_t": 4}
  assert evaluators.options_for("recovery", OPTIONS) == {"split": "test", "seed": 0, "steps": 5,
                                                         "t0": [1, 10]}
  assert evaluators.options_for("generate", OPTIONS) == {"split": "test", "mbr_samples": 2,
                                                         "seed": 0, "steps": 5}
  with pytest.raises(ValueError, match=r"unknown evaluator\(s\) \['bleu'\]; choose from generate"):
    evaluators.check_names(["nll", "bleu"])


def test_file_stems_name_every_setting_that_changes_the_numbers():
  config = ml_collections.ConfigDict({"sample": {"sampler": "ddim", "steps": 50, "clamp": False,
                                                 "collapse_repeats": False, "eta": 0.0,
                                                 "commit": False},
                                      "diffusion": {"num_steps": 100}})
  run = types.SimpleNamespace(step=7, config=config)
  stem = lambda name, **o: evaluators.EVALUATORS[name].file_stem(run, **o)
  assert stem("generate") == "validation_step7_ddim50_mbr1"
  assert stem("generate", split="test", sampler="ddpm", steps=200, num_inputs=3) == \
      "test_step7_ddpm200_mbr1_n3"
  assert stem("generate", collapse=True) == "validation_step7_ddim50_mbr1_collapse"
  config.sample.collapse_repeats = True  # the run's default names the file as well
  assert stem("generate") == "validation_step7_ddim50_mbr1_collapse"
  assert stem("generate", collapse=False) == "validation_step7_ddim50_mbr1"
  config.sample.collapse_repeats = False
  assert stem("generate", clamp=True, commit=True) == "validation_step7_ddim50_mbr1_clamp_commit"
  config.sample.commit = True
  assert stem("generate") == "validation_step7_ddim50_mbr1_commit"
  config.sample.commit = False
  # the decoder's noise scale (DDIM's eta, the AR sampler's temperature), given or the run's
  assert stem("generate", sampler="sample", eta=0.7) == "validation_step7_sample_mbr1_eta0.7"
  # greedy and sampled AR decoding take no steps, so none are named; beam's steps are its width
  assert stem("generate", sampler="greedy") == "validation_step7_greedy_mbr1"
  assert stem("generate", sampler="beam", steps=4) == "validation_step7_beam4_mbr1"
  config.sample.eta = 1.0
  assert stem("generate") == "validation_step7_ddim50_mbr1_eta1"
  assert stem("generate", eta=0.0) == "validation_step7_ddim50_mbr1"
  config.sample.eta = 0.0
  assert stem("recovery") == "recovery_step7_dpm++2m20_n64"
  assert stem("recovery", split="test", seed=2, steps=4, sampler="ddim") == \
      "recovery_step7_ddim4_n64_test_seed2"
  assert stem("nll", split="test") == "test_step7_nll" and stem("loss") == "validation_step7_loss"
  assert stem("nll", num_inputs=5, nll_t=99, seed=1) == "validation_step7_nll_n5_t99_seed1"
  assert len({stem("recovery", seed=s) for s in (0, 1)}) == 2


def test_human_yardstick_scores_the_outputs_and_a_reference_against_the_other_references():
  from diffusion_text import evaluate, metrics
  refs = [["a cheap pub near the river .", "a pub by the river , cheap .", "cheap pub , river ."],
          ["only one reference here ."],
          ["the eagle is a coffee shop .", "eagle : a coffee shop ."]]
  hyps = ["a pub near the river .", "whatever", refs[2][0]]
  got = evaluate.human_yardstick(hyps, refs)
  others = [refs[0][1:], refs[2][1:]]
  assert got["human_inputs"] == 2  # the input with one reference has no other to score against
  assert got["bleu_vs_other_refs"] == metrics.bleu([hyps[0], hyps[2]], others)["bleu"]
  assert got["human_bleu_vs_other_refs"] == metrics.bleu([refs[0][0], refs[2][0]], others)["bleu"]
  # an output that is the first reference scores what the person does
  same = evaluate.human_yardstick([r[0] for r in refs], refs)
  assert same["bleu_vs_other_refs"] == same["human_bleu_vs_other_refs"]
  assert evaluate.human_yardstick(["x"], [["only one"]]) == {}
