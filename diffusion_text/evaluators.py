"""Evaluators by name: ``EVALUATORS[name].run(run, **options) -> dict``.

Each evaluator scores a loaded run (``generate.load_run``) and returns a JSON-able result; an
``outputs`` entry (a list of per-input records) is written beside it as JSON Lines by ``write``.
``file_stem`` names its file under ``<workdir>/eval`` with every setting that changes the numbers,
so evaluations of one checkpoint with other settings never overwrite each other. ``run_named``
passes each evaluator only the options its signature names, so one command line can drive several.

    generate   sample for held-out inputs, MBR over |S| samples, BLEU/ROUGE-L/diversity, lm-score
    nll        bits per token (the variational bound, or the exact NLL of an AR run)
    loss       the training loop's held-out loss terms, with today's code
    recovery   sampling from q(x_t0 | x0) back to 0 for several t0 (where sampling fails)
    decided    per noise level t, the words one denoiser call names and their cross-entropy

and the controlled-generation tasks of ``control_tasks`` (classifier_accuracy, semantic, length,
infill, cfg, sentiment).
"""
import dataclasses
import inspect
import json
import os
from typing import Callable, Optional, Sequence

from diffusion_text import (control_tasks, decided, decoding, evaluate, generate, heldout, recovery,
                            runs)
from diffusion_text.generate import Run


@dataclasses.dataclass(frozen=True)
class Evaluator:
  run: Callable        # (run, **options) -> result dict (an "outputs" list goes to JSON Lines)
  file_stem: Callable  # (run, **options) -> file name under <workdir>/eval, without extension
  help: str


def _generate(run: Run, *, split: str = "validation", num_inputs: int = 0, mbr_samples: int = 1,
              seed: int = 0, sampler: Optional[str] = None, steps: Optional[int] = None,
              clamp: Optional[bool] = None, collapse: Optional[bool] = None,
              lm_teacher: Optional[str] = None, inputs: Optional[str] = None,
              eta: Optional[float] = None, commit: Optional[bool] = None,
              rerank: str = "mbr") -> dict:
  teacher_dir = run.config.eval.lm_teacher if lm_teacher is None else lm_teacher
  teacher = generate.load_run(teacher_dir) if teacher_dir else None
  result, outputs = evaluate.evaluate_run(run, split=_split_name(split, inputs),
                                          num_inputs=num_inputs, inputs=inputs,
                                          mbr_samples=mbr_samples, seed=seed, teacher=teacher,
                                          sampler=sampler, steps=steps, clamp=clamp,
                                          collapse=collapse, eta=eta, commit=commit,
                                          rerank=rerank)
  return {**result, "outputs": outputs}


def _split_name(split: str, inputs: Optional[str]) -> str:
  """What an evaluation on ``inputs`` (a JSON Lines file) is named in place of the split:
  ``inputs-<file name without extension>``."""
  if inputs is None:
    return split
  return "inputs-" + os.path.splitext(os.path.basename(inputs))[0]


def _generate_stem(run: Run, **options) -> str:
  """The file stem of ``_generate(run, **options)``: options not given take ``_generate``'s
  defaults, and a None sampler, steps, clamp, collapse, eta or commit the run config's ``sample``
  settings."""
  bound = inspect.signature(_generate).bind(run, **options)
  bound.apply_defaults()
  o, c = bound.arguments, run.config
  clamp = c.sample.clamp if o["clamp"] is None else o["clamp"]
  collapse = c.sample.collapse_repeats if o["collapse"] is None else o["collapse"]
  eta = c.sample.eta if o["eta"] is None else o["eta"]
  commit = c.sample.commit if o["commit"] is None else o["commit"]
  return evaluate.result_name(_split_name(o["split"], o["inputs"]), run.step, o["sampler"] or c.sample.sampler,
                              o["steps"] or c.sample.steps or c.diffusion.num_steps,
                              o["mbr_samples"], clamp=clamp, num_inputs=o["num_inputs"],
                              seed=o["seed"], collapse=collapse, eta=eta, commit=commit,
                              rerank=o["rerank"],
                              **decoding.dials(c.sample))


def _nll(run: Run, *, split: str = "validation", num_inputs: int = 0, nll_t: int = 16,
         seed: int = 0) -> dict:
  return heldout.nll_run(run, split=split, num_inputs=num_inputs, num_t=nll_t, seed=seed)


def _nll_stem(run: Run, *, split: str = "validation", num_inputs: int = 0, nll_t: int = 16,
              seed: int = 0, **_) -> str:
  return (f"{split}_step{run.step}_nll" + (f"_n{num_inputs}" if num_inputs else "")
          + (f"_t{nll_t}" if nll_t != 16 else "") + (f"_seed{seed}" if seed else ""))


def _loss(run: Run, *, split: str = "validation") -> dict:
  return heldout.loss_run(run, split=split)


RECOVERY_T0 = (500, 1000, 1500, 1800, 2000)


def _recovery(run: Run, *, t0: Sequence[int] = RECOVERY_T0, num_inputs: int = 64,
              steps: int = 20, sampler: str = "dpm++2m", split: str = "validation",
              seed: int = 0) -> dict:
  if run.config.model.family != "diffusion":
    raise ValueError(f"{run.workdir} is not a diffusion run: recovery samples a diffusion chain")
  rows = recovery.recovery(run, [int(t) for t in t0], num_inputs, steps, sampler, split, seed)
  return {"workdir": run.workdir, "step": run.step, "sampler": sampler, "steps": steps,
          "split": split, "num_inputs": num_inputs, "seed": seed, "rows": rows}


def _recovery_stem(run: Run, *, num_inputs: int = 64, steps: int = 20, sampler: str = "dpm++2m",
                   split: str = "validation", seed: int = 0, **_) -> str:
  return (f"recovery_step{run.step}_{sampler}{steps}_n{num_inputs}"
          + ("" if split == "validation" else f"_{split}") + (f"_seed{seed}" if seed else ""))


def _decided(run: Run, *, split: str = "validation", num_inputs: int = 256,
             seed: int = 0) -> dict:
  return decided.decided_run(run, split=split, num_inputs=num_inputs, seed=seed)


def _decided_stem(run: Run, *, split: str = "validation", num_inputs: int = 256, seed: int = 0,
                  **_) -> str:
  return (f"decided_step{run.step}_n{num_inputs}" + ("" if split == "validation" else f"_{split}")
          + (f"_seed{seed}" if seed else ""))


EVALUATORS = {
    "generate": Evaluator(_generate, _generate_stem,
                          "sample + text metrics (BLEU, ROUGE-L, diversity, lm-score)"),
    "nll": Evaluator(_nll, _nll_stem,
                     "bits per token (variational bound; exact NLL for AR runs)"),
    "loss": Evaluator(_loss, lambda run, split="validation", **_: f"{split}_step{run.step}_loss",
                      "the training's held-out loss terms"),
    "recovery": Evaluator(_recovery, _recovery_stem,
                          "sampling from q(x_t0 | x0) back to 0, per t0 (diffusion runs)"),
    "decided": Evaluator(_decided, _decided_stem,
                         "per noise level t, the held-out words one denoiser call names and their "
                         "cross-entropy (diffusion runs)"),
}
EVALUATORS.update({
    name: Evaluator(control_tasks.task_evaluator(name), control_tasks.file_stem(name), help_)
    for name, help_ in control_tasks.HELP.items()})


def options_for(name: str, options: dict) -> dict:
  """The entries of ``options`` that evaluator ``name`` takes (its keyword parameters); None values
  are left out, so the evaluator's own default applies."""
  params = inspect.signature(EVALUATORS[name].run).parameters
  return {k: v for k, v in options.items() if k in params and v is not None}


def check_names(names: Sequence[str]):
  unknown = sorted(set(names) - set(EVALUATORS))
  if unknown:
    raise ValueError(f"unknown evaluator(s) {unknown}; choose from {', '.join(EVALUATORS)}")


def run_named(name: str, run: Run, options: dict, out: Optional[str] = None) -> tuple[dict, str]:
  """Runs evaluator ``name`` on ``run`` with the options it takes and writes its result to
  ``<out>.json`` (default ``<workdir>/eval/<file_stem>``), an ``outputs`` list to ``<out>.jsonl``.
  Returns (result without the outputs, the path prefix written)."""
  check_names([name])
  ev = EVALUATORS[name]
  opts = options_for(name, options)
  result = ev.run(run, **opts)
  out = out or os.path.join(run.workdir, "eval", ev.file_stem(run, **opts))
  outputs = result.pop("outputs", None)
  runs.write_atomic(out + ".json", json.dumps(result, indent=2))
  if outputs is not None:
    runs.write_atomic(out + ".jsonl", "".join(json.dumps(o) + "\n" for o in outputs))
  return result, out
