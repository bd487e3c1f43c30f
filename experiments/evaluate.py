r"""Evaluate a trained run: sample for held-out inputs, MBR over |S| samples, BLEU/ROUGE/diversity.

    python -m experiments.evaluate --workdir runs/e2e_diffuseq_cpu --split test --mbr_samples 5 \
        --sampler ddim --steps 200

Writes ``<out>.json`` (metrics and settings) and ``<out>.jsonl`` (source, chosen output, references,
all samples), default ``<workdir>/eval/<split>_step<N>_<sampler><steps>_mbr<S>`` plus ``_clamp``,
``_commit``, ``_n<inputs>``, ``_seed<s>``, ``_st<score_temp>``, ``_lt<logit_temp>``,
``_gp<grid_power>``, ``_round<rounding>``, ``_sg<slot_guidance>`` and ``_cfg<cfg_scale>`` where
those differ from the defaults.

``--evaluators=nll`` reports bits per token instead (the variational bound for diffusion runs with
``--nll_t`` stratified timesteps per sequence; the exact NLL for AR runs), in
``<workdir>/eval/<split>_step<N>_nll.json``:

    python -m experiments.evaluate --workdir runs/e2e_diffuseq_sc --split test --evaluators nll

``--evaluators=loss`` reports the training loop's held-out loss terms for the checkpoint (the first
``eval.num_batches`` batches of ``--split``), in ``<workdir>/eval/<split>_step<N>_loss.json``:

    python -m experiments.evaluate --workdir runs/ce3k_absorb --checkpoint 2000 --evaluators loss

``--evaluators=recovery`` (diffusion runs) noises 64 held-out targets (every 10th of the split) to
each ``--t0`` with q(x_t0 | x0), samples back to 0 (DPM-Solver++ 20 unless ``--sampler/--steps``)
and scores the result against the target it started from, beside the denoiser's one-step prediction
at t0: where along the chain a model stops being able to write the text. In
``<workdir>/eval/recovery_step<N>_<sampler><steps>_n<inputs>[_<split>].json``:

    python -m experiments.evaluate --workdir runs/e2e_diffuseq_ce --evaluators recovery \
        --t0 500,1000,1500,1800,2000

``--evaluators=decided`` (diffusion runs): per noise level t, the share of 256 held-out target words
one denoiser call on q(x_t | x0) names, their cross-entropy and the share of PAD named, and the t
above which fewer than half the words are named (``half_decided``). In
``<workdir>/eval/decided_step<N>_n<inputs>.json``:

    python -m experiments.evaluate --workdir runs/e2e_cpu --evaluators decided

The controlled-generation tasks are evaluators too (docs/control.md), each against an unguided
baseline, written to ``<workdir>/eval/control_<task>.json``; ``--workdir`` is the diffusion LM (the
classifier for ``classifier_accuracy``):

    python -m experiments.evaluate --workdir runs/e2e_word_clf --evaluators classifier_accuracy
    python -m experiments.evaluate --workdir runs/e2e_cpu --evaluators semantic \
        --classifier runs/e2e_word_clf
    python -m experiments.evaluate --workdir runs/e2e_cpu --evaluators length,infill
    python -m experiments.evaluate --workdir runs/e2e_diffuseq_ce --evaluators cfg --scales 0,1,2,3
    python -m experiments.evaluate --workdir runs/demo --evaluators sentiment \
        --classifier runs/rt_sentiment_clf --judge runs/rt_sentiment_judge

Every evaluator is ``diffusion_text.evaluators.EVALUATORS[name]``; several may run in one command
(``--evaluators generate,nll``), each taking the flags it uses; a flag left unset takes that
evaluator's own default.
"""
import json
import os

from absl import flags, logging

from diffusion_text import decoding, evaluators, generate
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by experiments.train.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test", "train"],
                           "Split (semantic: whose most frequent field values are the targets; "
                           "choose guidance settings on train, report on validation).")
_INPUTS = flags.DEFINE_string(
    "inputs", None, "generate: score on this JSON Lines file of {\"src\", \"trg\"} pairs "
    "(references grouped by source) instead of --split; seq2seq runs.")
_NUM = flags.DEFINE_integer(
    "num_inputs", None, "Distinct inputs to evaluate; default all (0), recovery: 64, decided: 256, infill and "
    "cfg: 100.",
    lower_bound=0)
_MBR = flags.DEFINE_integer("mbr_samples", 1, "|S|: samples per input for MBR decoding.",
                            lower_bound=1)
_RERANK = flags.DEFINE_enum(
    "rerank", "mbr", ["mbr", "slots"], "generate: how one of the |S| samples is kept: MBR, or "
    "(E2E) the samples with the fewest slot errors first, then MBR among them; with AR "
    "--sampler beam, the most likely beam of those with the fewest slot errors.")
_SAMPLER = flags.DEFINE_string(
    "sampler", None, "ddpm|ddim|dpm++2m (diffusion), greedy|beam|sample (ar); default: the run's "
    "sample.sampler (recovery: dpm++2m; control tasks: ddpm).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps; default the run's sample.steps "
                              "(recovery: 20; control tasks: 100).", lower_bound=1)
_CLAMP = flags.DEFINE_bool("clamp", None, "Clamping trick; default the run's sample.clamp.")
_COMMIT = flags.DEFINE_bool(
    "commit", None, "generate: fix the generated words a group per sampler step, most confident "
    "first (diffusion runs); default the run's sample.commit.")
_ETA = flags.DEFINE_float("eta", None, "generate: the decoder's noise scale (DDIM's eta; the AR "
                          "sampler's softmax temperature); default the run's sample.eta.",
                          lower_bound=0.0)
_SCORE_TEMP = flags.DEFINE_float(
    "score_temp", None, "generate: diffusion samplers read the score divided by this (< 1 sharper, "
    "Plaid's 0.9); default the run's sample.score_temp.")
_LOGIT_TEMP = flags.DEFINE_float(
    "logit_temp", None, "generate: a softmax x0 head's estimate is read from its word logits "
    "divided by this (< 1 sharper); default the run's sample.logit_temp.")
_GRID_POWER = flags.DEFINE_float(
    "grid_power", None, "generate: diffusion samplers' timestep grid, t = T (1 - (1 - u)^p) for u "
    "evenly spaced: above 1 the steps crowd toward T; default the run's sample.grid_power.")
_ROUNDING = flags.DEFINE_enum(
    "rounding", None, list(decoding.ROUNDINGS), "generate: final vectors to words by the model's "
    "logits at t=1 (one more denoiser call) or the nearest embedding; default the run's "
    "sample.rounding.")
_SLOT_GUIDANCE = flags.DEFINE_float(
    "slot_guidance", None, "generate (E2E, diffusion seq2seq): weight of guidance toward a word of "
    "each MR field, read from the model's own word logits (control.presence_term); 0 = off; "
    "default the run's sample.slot_guidance.", lower_bound=0.0)
_CFG_SCALE = flags.DEFINE_float(
    "cfg_scale", None, "generate (diffusion seq2seq trained with condition dropout): "
    "classifier-free guidance scale, x0 = x0(null) + s (x0(source) - x0(null)); 1 = the "
    "conditional model; default the run's sample.cfg_scale.", lower_bound=0.0)
_COLLAPSE = flags.DEFINE_bool(
    "collapse_repeats", None, "Keep one word of each run of a repeated word in the outputs; "
    "default the run's sample.collapse_repeats.")
_SEED = flags.DEFINE_integer("seed", 0, "First sampling seed (sample k uses seed + k).")
_OUT = flags.DEFINE_string("out", None, "Output path prefix (without extension).")
_SHOW = flags.DEFINE_integer("show", 0, "generate: print the first N outputs (input -> output) and "
                             "a one-line reading of the BLEU.", lower_bound=0)
_EVALUATORS = flags.DEFINE_list(
    "evaluators", ["generate"],
    "; ".join(f"{k}: {v.help}" for k, v in evaluators.EVALUATORS.items()) + ".")
_TEACHER = flags.DEFINE_string(
    "lm_teacher", None, "AR run whose perplexity of the outputs is the lm-score (default: the run's "
    "eval.lm_teacher; '' = none).")
_NLL_T = flags.DEFINE_integer(
    "nll_t", None, "Stratified timesteps per sequence of the bound (T-1 = the exact grid); default "
    "16 (nll), 8 (the control tasks' fluency).", lower_bound=1)
_T0 = flags.DEFINE_list("t0", [str(t) for t in evaluators.RECOVERY_T0],
                        "recovery: start noise levels.")
_CLF = flags.DEFINE_string("classifier", None, "semantic, sentiment: the guiding classifier run.")
_JUDGE = flags.DEFINE_string("judge", None, "sentiment: a clean-text label classifier run.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Control tasks: rows per sampler call (64).",
                              lower_bound=1)
_NUM_TARGETS = flags.DEFINE_integer("num_targets", None, "semantic: most frequent field values "
                                    "(20).", lower_bound=1)
_PER_TARGET = flags.DEFINE_integer("per_target", None, "semantic, length, sentiment: samples per "
                                   "target (8).", lower_bound=1)
_LENGTHS = flags.DEFINE_list("lengths", None, "length: targets (10,15,20,25,30).")
_SCALES = flags.DEFINE_list("scales", None, "cfg: guidance scales (0,1,1.5,2,3).")
_K = flags.DEFINE_integer("guidance_steps", None, "K: gradient steps per sampler step (3).",
                          lower_bound=0)
_STEP_SIZE = flags.DEFINE_float("step_size", None, "Adagrad step size of the guidance (0.1).",
                                lower_bound=0)
_LAMBDA = flags.DEFINE_float("fluency_weight", None, "lambda: weight of the fluency term (0.01).",
                             lower_bound=0)
_WEIGHT = flags.DEFINE_float("weight", None, "Weight of the control term (1).")
_LAYERS = common.define_layers_flag()
_CHECKPOINT = common.define_checkpoint_flag()
flags.mark_flags_as_required(["workdir"])
# evaluators that run no sampler of their own settings (recovery's chain starts at t0 on its own grid)
NO_SAMPLER_SETTINGS = {"nll", "loss", "recovery", "decided"}


def run():
  names = list(dict.fromkeys(_EVALUATORS.value))
  try:
    evaluators.check_names(names)
    t0 = [int(t) for t in _T0.value]
    lengths = [int(x) for x in _LENGTHS.value] if _LENGTHS.value else None
    scales = [float(x) for x in _SCALES.value] if _SCALES.value else None
  except ValueError as e:
    raise common.UserError(f"--evaluators/--t0/--lengths/--scales: {e}") from e
  common.check_out("--out", _OUT.value)
  if _INPUTS.value is not None and names != ["generate"]:
    raise common.UserError("--inputs is an option of the generate evaluator alone")
  if _OUT.value and len(names) > 1:
    raise common.UserError("--out names one result; give one evaluator, or leave --out unset "
                           "so that each writes its own file")
  overrides = {f.name: f.value for f in (_SCORE_TEMP, _LOGIT_TEMP, _GRID_POWER, _ROUNDING,
                                         _SLOT_GUIDANCE, _CFG_SCALE) if f.value is not None}
  for name, value in overrides.items():
    if name in ("score_temp", "logit_temp", "grid_power") and not value > 0 or (
        name == "grid_power" and value < 1):
      raise common.UserError(f"--{name} must be {'>= 1' if name == 'grid_power' else '> 0'}, "
                             f"got {value}")
  r = generate.load_run(_WORKDIR.value, _CHECKPOINT.value,
                        scan_layers=common.scan_layers(_LAYERS.value))
  if overrides and (r.config.model.family != "diffusion" or set(names) & NO_SAMPLER_SETTINGS):
    raise common.UserError("--score_temp, --logit_temp, --grid_power, --rounding, "
                           "--slot_guidance and --cfg_scale are options of a diffusion run's "
                           "sampling evaluators (generate and the control tasks)")
  if "grid_power" in overrides and r.config.sample.get("grid"):
    raise common.UserError(f"--grid_power: {_WORKDIR.value} samples on its own distilled grid "
                           "(sample.grid)")
  if overrides.get("logit_temp", 1.0) != 1.0 and r.config.model.x0_head != "softmax":
    raise common.UserError(f"--logit_temp needs a softmax x0 head; {_WORKDIR.value} has "
                           f"model.x0_head={r.config.model.x0_head}")
  with r.config.unlocked():  # read where the decoders are built, so set before any is
    r.config.sample.update(overrides)
  options = dict(split=_SPLIT.value, num_inputs=_NUM.value, mbr_samples=_MBR.value,
                 seed=_SEED.value, sampler=_SAMPLER.value, steps=_STEPS.value, clamp=_CLAMP.value,
                 eta=_ETA.value, commit=_COMMIT.value, rerank=_RERANK.value,
                 collapse=_COLLAPSE.value, lm_teacher=_TEACHER.value, inputs=_INPUTS.value, nll_t=_NLL_T.value, t0=t0,
                 classifier=_CLF.value,
                 judge=_JUDGE.value, batch_size=_BATCH.value, num_targets=_NUM_TARGETS.value,
                 per_target=_PER_TARGET.value, lengths=lengths, scales=scales,
                 guidance_steps=_K.value, step_size=_STEP_SIZE.value,
                 fluency_weight=_LAMBDA.value, weight=_WEIGHT.value)
  for name in names:
    try:
      result, out = evaluators.run_named(name, r, options, _OUT.value)
    except ValueError as e:
      raise common.UserError(str(e)) from e
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2)[:4000])
    logging.info("wrote %s.json", out)
    if _SHOW.value and name == "generate":
      _show(result, out + ".jsonl", _SHOW.value)


def _show(result: dict, outputs_path: str, n: int):
  with open(outputs_path) as f:
    outputs = [json.loads(line) for _, line in zip(range(n), f)]
  print()
  for o in outputs:
    print(f"{o['src']}\n  -> {o['hyp']}" if "src" in o else o["hyp"])
  if "blank_accuracy" in result:
    print(f"\nThe model wrote the original word in {100 * result['blank_accuracy']:.0f}% of the "
          f"{result['blanks']} blanks of {result['num_inputs']} {result['split']} snippets; writing "
          f"the most common blank word of the training data ({result['blank_baseline_word']!r}) in "
          f"every blank gets {100 * result['blank_baseline_accuracy']:.0f}%"
          + (f", and writing the word the training data most often has between the same two "
             f"neighbours gets {100 * result['blank_neighbour_accuracy']:.0f}%"
             if "blank_neighbour_accuracy" in result else "") + ". BLEU "
          f"{result['bleu']:.1f} (sacrebleu, 0-100, against the original snippets).")
  elif "source_bleu" in result:
    where = (os.path.basename(result["inputs"]) if result.get("inputs")
             else f"the {result['split']} split")
    print(f"\nBLEU {result['bleu']:.1f} on {result['num_inputs']} inputs of {where} (sacrebleu, "
          f"0-100: n-gram overlap with the reference texts). The inputs themselves, returned "
          f"unchanged, score {result['source_bleu']:.1f}: an output below that loses more of the "
          f"reference than the model adds.")
    if "human_bleu_vs_other_refs" in result:
      print(f"Beside a person's text: on the {result['human_inputs']} inputs with two or more "
            f"references, scored against all but the first, the outputs get "
            f"{result['bleu_vs_other_refs']:.1f} and the first reference gets "
            f"{result['human_bleu_vs_other_refs']:.1f}. A score near a person's means the outputs "
            f"are as close to the references as a person's text is; BLEU rewards the most common "
            f"wording, so a higher one does not mean better writing.")


if __name__ == "__main__":
  common.run_app(run)
