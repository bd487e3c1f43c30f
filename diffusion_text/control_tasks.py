"""Controlled generation tasks as evaluators, each against an unguided baseline (docs/control.md).

    classifier_accuracy  a noisy-embedding classifier's accuracy per noise level (run: the classifier)
    semantic             mention an E2E field value, steered by a word classifier (``classifier``)
    length               exact length: EOS fixed after n positions, PAD/EOS avoided before it
    infill               the middle third of held-out sentences, BLEU/ROUGE-L against the original
    cfg                  classifier-free guidance of a seq2seq run, BLEU per scale
    sentiment            a label classifier steers, a clean-text judge (``judge``) scores

Each is ``EVALUATORS[name].run(run, **options)`` (``evaluators.py``); ``run`` is the diffusion LM,
except for ``classifier_accuracy``. Fluency of unconditional outputs is the diffusion LM's own
variational bound on them in bits per token (``nll``, ``nll_t`` stratified t; lower is more likely
under the model).
"""
import collections
import dataclasses
import inspect
import os
import time

from absl import logging
import numpy as np

from diffusion_text import (classifier, control, decoding, embeddings, evaluate, generate, heldout,
                            metrics)
from diffusion_text.data import mr, pipeline, tokenizers


@dataclasses.dataclass(frozen=True)
class _Options:
  sampler: str = "ddpm"
  steps: int = 100
  seed: int = 0
  batch_size: int = 64
  guidance_steps: int = 3  # K: gradient steps per sampler step
  step_size: float = 0.1  # Adagrad step size of the guidance
  fluency_weight: float = 0.01  # lambda: weight of the fluency term
  weight: float = 1.0  # weight of the control term
  nll_t: int = 8  # stratified timesteps of the fluency bound
  classifier: str = ""  # semantic, sentiment: the guiding classifier run
  judge: str = ""  # sentiment: a clean-text label classifier run (classifier.max_t = 0)
  split: str = "validation"  # semantic: whose most frequent field values are the targets
  num_targets: int = 20  # semantic: most frequent field values
  per_target: int = 8  # semantic, length, sentiment: samples per target
  lengths: tuple = (10, 15, 20, 25, 30)  # length: targets
  num_inputs: int = 100  # infill, cfg: held-out inputs
  scales: tuple = (0.0, 1.0, 1.5, 2.0, 3.0)  # cfg: guidance scales


def _unconditional(lm, task):
  if lm.config.model.family != "diffusion":
    raise ValueError(f"{task} needs a diffusion run; {lm.workdir} is {lm.config.model.family}")
  if lm.is_seq2seq:
    raise ValueError(f"{task} needs an unconditional LM; {lm.workdir} is seq2seq")


def _guidance(o, *terms):
  return control.Guidance(terms=tuple(terms), num_steps=o.guidance_steps, step_size=o.step_size,
                          fluency_weight=o.fluency_weight)


# every control task samples unclamped and, with DDIM, deterministically; recorded in its JSON
_CLAMP, _ETA = False, 0.0


def _decoder(o, run, **kw):
  return control.make_decoder(run, sampler=o.sampler, steps=o.steps, clamp=_CLAMP, eta=_ETA, **kw)


def _fluency(o, run, ids):
  r = heldout.nll_of_ids(run, ids, np.ones_like(ids), num_t=o.nll_t, seed=o.seed,
                          batch_size=o.batch_size)
  return {"nll_bits_per_token": r["bits_per_token"], "nll_estimator": r["estimator"]}


def _validation(run):
  return pipeline.prepare_sources(run.config.data)["validation"]


def _accuracy(o, clf):
  if clf.config.model.family != "classifier":
    raise ValueError(f"{clf.workdir} is not a classifier run")
  encode = pipeline.make_encoder(clf.tokenizer, clf.config.data)
  val = pipeline.prepare_sources(clf.config.data)["validation"]
  rows = [encode(val[i]) for i in range(min(len(val), 512))]
  batches = [{k: np.stack([r[k] for r in rows[i:i + 64]]) for k in ("ids", "target_mask", "label")}
             for i in range(0, len(rows), 64)]
  T = clf.context.diffusion.num_steps
  ts = sorted({0, T // 10, T // 4, T // 2, 3 * T // 4, T})
  return {"classifier": clf.workdir, "examples": len(rows),
          "by_t": classifier.accuracy_by_noise(clf, batches, ts)}


def _semantic(o, lm):
  _unconditional(lm, "semantic")
  clf = _classifier_of(lm, o.classifier, "--classifier")
  split = pipeline.prepare_sources(lm.config.data)[o.split]
  counts = collections.Counter(fv for i in range(len(split))
                               for fv in mr.fields(pipeline._text(split[i]["src"])))
  targets = []
  for (field, value), _ in counts.most_common():
    try:
      targets.append((field, value, classifier.np_word_ids(lm.tokenizer, value)))
    except ValueError:
      continue  # a value with out-of-vocabulary words cannot be steered towards
    if len(targets) == o.num_targets:
      break
  n = o.per_target
  K = max(len(t[2]) for t in targets)
  labels = np.full((len(targets) * n, K), -1, np.int32)
  for j, (_, _, ids) in enumerate(targets):
    labels[j * n:(j + 1) * n, :len(ids)] = ids
  results = {}
  for name, out, texts, seconds in _unguided_and_guided(o, lm, clf, labels, "word_classifier"):
    hits = [f" {targets[i // n][1]} " in f" {t} " for i, t in enumerate(texts)]
    results[name] = {"success": float(np.mean(hits)), "seconds": seconds,
                     **_fluency(o, lm, out), **metrics.dist_1(texts),
                     "examples": [{"target": f"{targets[i // n][0]}={targets[i // n][1]}",
                                   "text": texts[i]} for i in range(0, len(texts), n)]}
    logging.info("semantic %s: success %.3f", name, results[name]["success"])
  return {"split": o.split, "targets": [f"{f}={v}" for f, v, _ in targets], "per_target": n,
          **results}


def _unguided_and_guided(o, lm, clf, labels, term_name):
  """(name, output ids, texts, seconds) of unconditional sampling without and with the classifier
  term towards each row's ``labels`` (N, K)."""
  ids0, mask = generate.unconditional_inputs(len(labels), lm.config.data.max_len)
  term = control.classifier_term(classifier.log_prob_fn(clf.model, clf.params, clf.config),
                                 weight=o.weight, name=term_name)
  for name, guidance in (("unguided", None), ("guided", _guidance(o, term))):
    t0 = time.time()
    out = control.generate_ids(_decoder(o, lm, guidance=guidance), ids0, mask,
                               (labels,) if guidance else (), batch_size=o.batch_size,
                               seed=o.seed)
    yield name, out, [lm.decode(r) for r in out], round(time.time() - t0, 1)


def _classifier_of(lm, clf_dir, flag):
  if not clf_dir:
    raise ValueError(f"this evaluator needs {flag} (a classifier run trained on {lm.workdir})")
  clf = generate.load_run(clf_dir)
  if clf.config.model.family != "classifier":
    raise ValueError(f"{clf_dir} is not a classifier run")
  if os.path.abspath(clf.config.classifier.base_run) != os.path.abspath(lm.workdir):
    raise ValueError(f"{clf_dir} was trained on {clf.config.classifier.base_run}, not {lm.workdir}")
  return clf


def _sentiment(o, lm):
  _unconditional(lm, "sentiment")
  clf = _classifier_of(lm, o.classifier, "--classifier")
  judge = _classifier_of(lm, o.judge, "--judge")
  if clf.config.classifier.labels != "label" or judge.config.classifier.max_t != 0:
    raise ValueError("sentiment needs a label classifier (--classifier) and a clean-text judge "
                     "(--judge, classifier.max_t = 0)")
  C, n = clf.config.classifier.num_classes, o.per_target
  want = np.repeat(np.arange(C), n)
  val = _validation(lm)
  held = [(pipeline._text(val[i]["tgt"]), int(val[i]["label"])) for i in range(min(len(val), 1000))]
  judge_acc = float(np.mean(np.argmax(classifier.judge(judge, [t for t, _ in held]), -1)
                            == np.array([y for _, y in held])))
  results = {}
  for name, out, texts, seconds in _unguided_and_guided(o, lm, clf, want[:, None].astype(np.int32),
                                                        "sentiment"):
    got = np.argmax(classifier.judge(judge, texts), -1)
    results[name] = {"success": float(np.mean(got == want)), "seconds": seconds,
                     **_fluency(o, lm, out), **metrics.dist_1(texts),
                     "examples": [{"target": int(want[i]), "judged": int(got[i]), "text": texts[i]}
                                  for i in range(0, len(texts), max(n // 2, 1))]}
    logging.info("sentiment %s: success %.3f", name, results[name]["success"])
  return {"classes": C, "per_target": n, "judge_accuracy_on_dev_text": judge_acc,
          "judge_examples": len(held), **results}


def _length(o, lm):
  _unconditional(lm, "length")
  lengths = [int(x) for x in o.lengths]
  n = o.per_target
  L = lm.config.data.max_len
  rows = [control.length_inputs(k, L) for k in lengths for _ in range(n)]
  ids, mask = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
  want = np.repeat(lengths, n)
  avoid = control.avoid_tokens_term(embeddings.table(lm.params, lm.config.model),
                                    lm.diffusion,
                                    [tokenizers.PAD, tokenizers.EOS], weight=o.weight)
  results = {}
  t0 = time.time()
  free = control.generate_ids(_decoder(o, lm), *generate.unconditional_inputs(len(rows), L), (),
                              batch_size=o.batch_size, seed=o.seed)
  free_len = np.array([len(lm.decode(r).split()) for r in free])
  results["unguided"] = {"success": float(np.mean(free_len == want)),
                         "seconds": round(time.time() - t0, 1), **_fluency(o, lm, free)}
  for name, guidance, args in (("mask", None, ()), ("mask+avoid_pad_eos", _guidance(o, avoid), (mask,))):
    t0 = time.time()
    out = control.generate_ids(_decoder(o, lm, guidance=guidance), ids, mask, args,
                               batch_size=o.batch_size, seed=o.seed)
    texts = [lm.decode(r) for r in out]
    got = np.array([len(t.split()) for t in texts])
    results[name] = {"success": float(np.mean(got == want)),
                     "mean_abs_error": float(np.mean(np.abs(got - want))),
                     "seconds": round(time.time() - t0, 1), **_fluency(o, lm, out),
                     "examples": [{"length": int(want[i]), "text": texts[i]}
                                  for i in range(0, len(texts), n)]}
    logging.info("length %s: success %.3f", name, results[name]["success"])
  return {"lengths": lengths, "per_target": n, **results}


def _infill(o, lm):
  _unconditional(lm, "infill")
  val = _validation(lm)
  seen, rows, originals = set(), [], []
  for i in range(len(val)):
    words = pipeline._text(val[i]["tgt"]).split()
    if len(words) < 9 or " ".join(words) in seen:
      continue
    seen.add(" ".join(words))
    a, b = len(words) // 3, 2 * len(words) // 3
    try:
      row = control.infill_inputs(lm.tokenizer, " ".join(words[:a]), " ".join(words[b:]),
                                  b - a, lm.config.data.max_len)
    except ValueError:
      continue
    rows.append(row)
    originals.append(" ".join(words[a:b]))
    if len(rows) == o.num_inputs:
      break
  ids, mask = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
  t0 = time.time()
  out = control.generate_ids(_decoder(o, lm), ids, mask, (), batch_size=o.batch_size,
                             seed=o.seed)
  fills = [control.infill_text(lm.tokenizer, o, m) for o, m in zip(out, mask)]
  context_kept = bool(np.all(out[mask == 0] == ids[mask == 0]))
  refs = [[o] for o in originals]
  return {"num_inputs": len(rows), "context_tokens_unchanged": context_kept,
          **metrics.bleu(fills, refs), **metrics.rouge_l(fills, refs),
          "seconds": round(time.time() - t0, 1),
          "examples": [{"context": lm.decode(i), "original_middle": o, "fill": f}
                       for i, o, f in list(zip(ids, originals, fills))[:10]]}


def _cfg(o, lm):
  if lm.config.model.family != "diffusion":
    raise ValueError(f"cfg needs a diffusion run; {lm.workdir} is {lm.config.model.family}")
  if not lm.is_seq2seq:
    raise ValueError(f"cfg needs a seq2seq run; {lm.workdir} is unconditional")
  groups = evaluate.grouped_references(_validation(lm), o.num_inputs)
  srcs, refs = [g[0] for g in groups], [g[1] for g in groups]
  ids, mask = lm.pack_sources(srcs)
  results = []
  for s in [float(x) for x in o.scales]:
    t0 = time.time()
    out = control.generate_ids(_decoder(o, lm, cfg_scale=s), ids, mask, (), batch_size=o.batch_size,
                               seed=o.seed)
    hyps = lm.decode_outputs(out, srcs)
    results.append({"scale": s, **metrics.bleu(hyps, refs), **metrics.rouge_l(hyps, refs),
                    **metrics.dist_1(hyps), "seconds": round(time.time() - t0, 1),
                    "examples": hyps[:3]})
    logging.info("cfg scale %.2f: %s", s, {k: v for k, v in results[-1].items() if k != "examples"})
  return {"num_inputs": len(srcs), "by_scale": results}




SAMPLING = ("sampler", "steps", "seed", "batch_size")
GUIDANCE = ("guidance_steps", "step_size", "fluency_weight", "weight")
HELP = {
    "classifier_accuracy": "a classifier run's accuracy per noise level",
    "semantic": "steer towards E2E field values with --classifier",
    "length": "exact output length",
    "infill": "fill the middle third of held-out sentences",
    "cfg": "classifier-free guidance, BLEU per --scales",
    "sentiment": "steer sentiment with --classifier, judged by --judge",
}
# name: (task, the options it reads besides SAMPLING)
TASKS = {
    "classifier_accuracy": (_accuracy, ()),
    "semantic": (_semantic, ("classifier", "split", "num_targets", "per_target", "nll_t",
                             *GUIDANCE)),
    "length": (_length, ("lengths", "per_target", "nll_t", *GUIDANCE)),
    "infill": (_infill, ("num_inputs",)),
    "cfg": (_cfg, ("num_inputs", "scales")),
    "sentiment": (_sentiment, ("classifier", "judge", "per_target", "nll_t", *GUIDANCE)),
}


def task_evaluator(name: str):
  """``run(run, **options) -> dict`` of control task ``name``, its signature naming exactly the
  options the task reads (with their defaults), so ``evaluators.options_for`` passes only those."""
  task, reads = TASKS[name]
  keys = SAMPLING + reads
  defaults = _Options()

  def run_task(run, **options):
    o = dataclasses.replace(defaults, **options)
    result = task(o, run)
    d = run.config.data
    result.update(task=name, workdir=run.workdir, step=run.step, run_task=d.task,
                  dataset=d.dataset, **{k: getattr(o, k) for k in keys},
                  clamp=_CLAMP, eta=_ETA,
                  collapse=bool(run.config.sample.collapse_repeats),
                  **decoding.dials(run.config.sample))  # applied by decoding.make_decoder
    return result

  P = inspect.Parameter
  run_task.__signature__ = inspect.Signature(
      [P("run", P.POSITIONAL_OR_KEYWORD)]
      + [P(k, P.KEYWORD_ONLY, default=getattr(defaults, k)) for k in keys])
  return run_task


def file_stem(name: str):
  return lambda run, split="validation", **_: (
      f"control_{name}" + ("" if name != "semantic" or split == "validation" else f"_{split}"))
