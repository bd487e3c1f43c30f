r"""Mean and spread of one configuration's evaluations over training seeds.

    python -m experiments.seeds --out docs/results/ar_baseline/seeds_test_beam4.json \
        --evals runs/e2e_ar_cpu/eval/test_step1200_beam4_mbr1.json,runs/ar_seed1/eval/...

Each ``--evals`` file is an ``experiments.evaluate`` result of one run; the evaluations must
differ in nothing (split, sampler, steps and every other sampling setting alike) and, where their
workdirs are at hand, the runs only in their training seed (``config.seed``) and the config
keys named by ``--may_differ``, or the command refuses. A pipeline seeded whole (the recipe: a
teacher, its distillation and a student per seed) keeps each seed's data in its own directory:

    python -m experiments.seeds --out seeds.json --may_differ data.source_dir \
        --evals runs/e2e_diffuseq_cpu/eval/...,runs/recipe_seed1/student/eval/...

Writes, per metric (BLEU, slot error rate, share with every field right, cut-off share,
ROUGE-L where present), the mean, the sample standard deviation, the minimum and the maximum,
beside each run's value and seed; and beside it, as ``<out>.jsonl``, each source with every
run's text (``{"src", "hyps": [...]}`` in ``--evals`` order), read from the ``.jsonl`` beside each
evaluation, so the summary can be re-scored. An evaluation without its texts is refused.
"""
import json
import os
import statistics

from absl import flags

from diffusion_text import decoding, runs
from experiments import common

_EVALS = flags.DEFINE_list("evals", None, "Evaluation JSON files, one per training seed.")
_OUT = flags.DEFINE_string("out", None, "Output .json path.")
_MAY_DIFFER = flags.DEFINE_list(
    "may_differ", [], "Dotted config keys the runs may differ in besides seed (data.source_dir).")
flags.mark_flags_as_required(["evals", "out"])

METRICS = ("bleu", "slot_error_rate", "all_fields_right", "cut_off", "rouge_l")
# what must be alike in the evaluations of one configuration's seeds (those present)
SETTINGS = ("task", "dataset", "inputs", "split", "num_inputs", "checkpoint_step", "sampler",
            "steps", "clamp", "eta", "commit", "collapse", "mbr_samples", "rerank", "seed",
            "batch_size", "logit_temp", "score_temp", "grid_power", "rounding", "slot_guidance",
            "cfg_scale")


def _load(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise common.UserError(f"{path}: not a readable evaluation JSON ({e})") from e


def texts(paths: list[str]) -> list[dict]:
  """Per source, each evaluation's text, from the ``.jsonl`` beside each evaluation JSON."""
  per_run = []
  for p in paths:
    rows_path = os.path.splitext(p)[0] + ".jsonl"
    try:
      with open(rows_path, encoding="utf-8") as f:
        per_run.append([json.loads(line) for line in f if line.strip()])
    except (OSError, ValueError) as e:
      raise common.UserError(f"{rows_path}: the texts of {p} are needed beside it ({e})") from e
  srcs = [r.get("src") for r in per_run[0]]
  for p, rows in zip(paths[1:], per_run[1:]):
    if [r.get("src") for r in rows] != srcs:
      raise common.UserError(f"{p} was evaluated on other sources than {paths[0]}")
  return [{"src": s, "hyps": [rows[i]["hyp"] for rows in per_run]} for i, s in enumerate(srcs)]


def summarize(results: list[dict], seeds: list[int]) -> dict:
  """Per metric present in every result: mean, sample standard deviation (0 for one run), min and
  max."""
  out = {"runs": [{"workdir": r.get("workdir"), "seed": s, **{m: r[m] for m in METRICS if m in r}}
                  for r, s in zip(results, seeds)]}
  for m in METRICS:
    if all(m in r for r in results):
      v = [float(r[m]) for r in results]
      out[m] = {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                "min": min(v), "max": max(v)}
  return out


def _settings(result: dict) -> dict:
  """The result's ``SETTINGS``; in a diffusion evaluation (one that records sampling dials), a
  dial added since it ran is at its default (``decoding.DIALS``), as it was then."""
  dials = decoding.DIALS if any(k in result for k in decoding.DIALS) else {}
  return {k: result.get(k, dials.get(k)) for k in SETTINGS if k in result or k in dials}


def _training_seeds(workdirs: list, may_differ=()) -> list:
  """Each run's ``config.seed`` (None where its workdir is not at hand); refuses runs whose
  configs differ in more than the seed and ``may_differ``, or that share a seed."""
  configs = [runs.flatten_config(runs.load_config(w).to_dict()) if w and os.path.isdir(w) else None
             for w in workdirs]
  seeds = [c["seed"] if c else None for c in configs]
  known = [(w, c) for w, c in zip(workdirs, configs) if c]
  for w, c in known[1:]:
    diff = sorted(k for k in set(c) | set(known[0][1])
                  if k != "seed" and k not in may_differ and c.get(k) != known[0][1].get(k))
    if diff:
      raise common.UserError(f"{w} is configured otherwise than {known[0][0]}: {diff}")
  if len({s for s in seeds if s is not None}) < len([s for s in seeds if s is not None]):
    raise common.UserError(f"the runs share a training seed: {seeds}")
  return seeds


def run():
  common.check_out("--out", _OUT.value)
  results = [_load(p) for p in _EVALS.value]
  for p, r in zip(_EVALS.value[1:], results[1:]):
    diff = sorted(k for k in set(_settings(r)) | set(_settings(results[0]))
                  if _settings(r).get(k) != _settings(results[0]).get(k))
    if diff:
      raise common.UserError(f"{p} was evaluated otherwise than {_EVALS.value[0]}: {diff}")
  seeds = _training_seeds([r.get("workdir") for r in results], _MAY_DIFFER.value)
  rows = texts(_EVALS.value)
  text = json.dumps({"evals": _EVALS.value, "settings": _settings(results[0]),
                     "may_differ": _MAY_DIFFER.value,
                     **summarize(results, seeds)}, indent=2)
  common.write_atomic(os.path.splitext(_OUT.value)[0] + ".jsonl",
                      "".join(json.dumps(r) + "\n" for r in rows))
  common.write_atomic(_OUT.value, text + "\n")
  print(text)


if __name__ == "__main__":
  common.run_app(run)
