r"""Evaluate a trained run: sample for held-out inputs, MBR over |S| samples, BLEU/ROUGE/diversity.

    python -m experiments.evaluate --workdir runs/e2e_diffuseq_cpu --split test --mbr_samples 5 \
        --sampler ddim --steps 200

Writes ``<out>.json`` (metrics and settings) and ``<out>.jsonl`` (source, chosen output, references,
all samples), default ``<workdir>/eval/<split>_step<N>_<sampler><steps>_mbr<S>`` plus ``_clamp``,
``_n<inputs>`` and ``_seed<s>`` where those differ from the defaults.

``--evaluators=nll`` reports bits per token instead (the variational bound for diffusion runs with
``--nll_t`` stratified timesteps per sequence; the exact NLL for AR runs), in
``<workdir>/eval/<split>_step<N>_nll.json``:

    python -m experiments.evaluate --workdir runs/e2e_diffuseq_sc --split test --evaluators nll

``--evaluators=loss`` reports the training loop's held-out loss terms for the checkpoint (the first
``eval.num_batches`` batches of ``--split``), in ``<workdir>/eval/<split>_step<N>_loss.json``:

    python -m experiments.evaluate --workdir runs/ce3k_absorb --checkpoint 2000 --evaluators loss
"""
import json
import os

from absl import flags, logging

from diffusion_text import evaluate, generate
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by experiments.train.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Held-out split.")
_NUM = flags.DEFINE_integer("num_inputs", 0, "Distinct inputs to evaluate (0 = all).",
                            lower_bound=0)
_MBR = flags.DEFINE_integer("mbr_samples", 1, "|S|: samples per input for MBR decoding.",
                            lower_bound=1)
_SAMPLER = flags.DEFINE_string(
    "sampler", None,
    "ddpm|ddim|dpm++2m (diffusion), greedy|beam (ar); default: the run's sample.sampler.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps; default the run's sample.steps.",
                              lower_bound=1)
_CLAMP = flags.DEFINE_bool("clamp", None, "Clamping trick; default the run's sample.clamp.")
_SEED = flags.DEFINE_integer("seed", 0, "First sampling seed (sample k uses seed + k).")
_OUT = flags.DEFINE_string("out", None, "Output path prefix (without extension).")
_EVALUATORS = flags.DEFINE_list("evaluators", ["generate"],
                                "generate (sample + text metrics), nll (bits per token), loss "
                                "(the training's held-out loss terms).")
_TEACHER = flags.DEFINE_string(
    "lm_teacher", None, "AR run whose perplexity of the outputs is the lm-score (default: the run's "
    "eval.lm_teacher; '' = none).")
_NLL_T = flags.DEFINE_integer("nll_t", 16,
                              "nll: stratified timesteps per sequence (T-1 = the exact grid).",
                              lower_bound=1)
_LAYERS = common.define_layers_flag()
_CHECKPOINT = common.define_checkpoint_flag()
flags.mark_flags_as_required(["workdir"])


def run():
  unknown = set(_EVALUATORS.value) - {"generate", "nll", "loss"}
  if unknown:
    raise common.UserError(
        f"unknown evaluator(s) {sorted(unknown)}; choose from generate, nll, loss")
  if _OUT.value and len(set(_EVALUATORS.value)) > 1:
    raise common.UserError("--out names one result; give one evaluator, or leave --out unset "
                           "so that each writes its own file")
  r = generate.load_run(_WORKDIR.value, _CHECKPOINT.value,
                        scan_layers=common.scan_layers(_LAYERS.value))
  scores = {"nll": lambda: evaluate.nll_run(r, split=_SPLIT.value, num_inputs=_NUM.value,
                                            num_t=_NLL_T.value, seed=_SEED.value),
            "loss": lambda: evaluate.loss_run(r, split=_SPLIT.value)}
  for name in ("nll", "loss"):
    if name in _EVALUATORS.value:
      try:
        result = scores[name]()
      except ValueError as e:
        raise common.UserError(str(e)) from e
      out = _OUT.value or os.path.join(_WORKDIR.value, "eval", f"{_SPLIT.value}_step{r.step}_{name}")
      common.write_atomic(out + ".json", json.dumps(result, indent=2))
      print(json.dumps(result, indent=2))
  if "generate" not in _EVALUATORS.value:
    return
  teacher_dir = r.config.eval.lm_teacher if _TEACHER.value is None else _TEACHER.value
  teacher = generate.load_run(teacher_dir) if teacher_dir else None
  try:
    result, outputs = evaluate.evaluate_run(
        r, split=_SPLIT.value, num_inputs=_NUM.value, mbr_samples=_MBR.value, seed=_SEED.value,
        teacher=teacher, sampler=_SAMPLER.value, steps=_STEPS.value, clamp=_CLAMP.value)
  except ValueError as e:
    raise common.UserError(str(e)) from e
  steps = _STEPS.value or r.config.sample.steps or r.config.diffusion.num_steps
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval", evaluate.result_name(
      _SPLIT.value, r.step, _SAMPLER.value or r.config.sample.sampler, steps, _MBR.value,
      clamp=r.config.sample.clamp if _CLAMP.value is None else _CLAMP.value,
      num_inputs=_NUM.value, seed=_SEED.value))
  common.write_atomic(out + ".json", json.dumps(result, indent=2))
  common.write_atomic(out + ".jsonl", "".join(json.dumps(o) + "\n" for o in outputs))
  print(json.dumps(result, indent=2))
  logging.info("wrote %s.json", out)


if __name__ == "__main__":
  common.run_app(run)
