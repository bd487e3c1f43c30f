r"""Controlled generation tasks and their success metrics, each against an unguided baseline.

    # classifier accuracy per noise level (held-out E2E sentences)
    python -m experiments.control --task accuracy --classifier runs/e2e_word_clf
    # E2E semantic content: mention a field value (success: the value string appears)
    python -m experiments.control --task semantic --lm runs/e2e_cpu --classifier runs/e2e_word_clf
    # exact length (success: the output has exactly n tokens)
    python -m experiments.control --task length --lm runs/e2e_cpu
    # infilling the middle third of held-out E2E sentences (BLEU/ROUGE-L against the original)
    python -m experiments.control --task infill --lm runs/e2e_cpu
    # classifier-free guidance of a seq2seq run trained with condition dropout: BLEU per scale
    python -m experiments.control --task cfg --lm runs/e2e_diffuseq_ce --scales 0,1,2,3
    # sentiment of review snippets (success: a separately trained clean-text judge agrees)
    python -m experiments.control --task sentiment --lm runs/demo --classifier runs/rt_sentiment_clf \
        --judge runs/rt_sentiment_judge

Each task writes ``<out>/<task>.json`` (metrics, settings, example outputs); default
``<lm or classifier>/control``. Fluency of unconditional outputs is the diffusion LM's own variational
bound on its outputs in bits per token (``nll``; lower is more fluent under the model), since the AR
teacher of this repository is a seq2seq model and cannot score unconditional text.
"""
import collections
import json
import os
import time

from absl import flags, logging
import numpy as np

from diffusion_text import classifier, control, embeddings, evaluate, generate, metrics
from diffusion_text.data import pipeline, sources, tokenizers
from experiments import common

TASKS = ("accuracy", "semantic", "length", "infill", "cfg", "sentiment")
_TASK = flags.DEFINE_enum("task", None, TASKS, "Which control experiment.")
_LM = flags.DEFINE_string("lm", None, "Diffusion run to sample from.")
_CLF = flags.DEFINE_string("classifier", None, "Classifier run (semantic, sentiment, accuracy).")
_JUDGE = flags.DEFINE_string("judge", None, "sentiment: clean-text label classifier that judges.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default <lm or classifier>/control).")
_SAMPLER = flags.DEFINE_string("sampler", "ddpm", "ddpm | ddim | dpm++2m.")
_STEPS = flags.DEFINE_integer("steps", 100, "Sampler steps.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Rows per sampler call.", lower_bound=1)
_NUM_TARGETS = flags.DEFINE_integer("num_targets", 20, "semantic: most frequent field values.",
                                    lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "validation", ["train", "validation"],
                           "semantic: split whose most frequent MR field values are the targets "
                           "(choose guidance settings on train, report on validation).")
_PER_TARGET = flags.DEFINE_integer("per_target", 8, "semantic/length: samples per target.",
                                   lower_bound=1)
_LENGTHS = flags.DEFINE_list("lengths", ["10", "15", "20", "25", "30"], "length: targets.")
_NUM_INPUTS = flags.DEFINE_integer("num_inputs", 100, "infill/cfg: held-out inputs.", lower_bound=1)
_SCALES = flags.DEFINE_list("scales", ["0", "1", "1.5", "2", "3"], "cfg: guidance scales.")
_K = flags.DEFINE_integer("guidance_steps", 3, "K: gradient steps per sampler step.", lower_bound=0)
_STEP_SIZE = flags.DEFINE_float("step_size", 0.1, "Adagrad step size of the guidance.",
                                lower_bound=0)
_LAMBDA = flags.DEFINE_float("fluency_weight", 0.01, "lambda: weight of the fluency term.",
                             lower_bound=0)
_WEIGHT = flags.DEFINE_float("weight", 1.0, "Weight of the control term.")
_NLL_T = flags.DEFINE_integer("nll_t", 8, "Stratified timesteps of the fluency bound.",
                              lower_bound=1)
_LAYERS = common.define_layers_flag()


def _guidance(*terms):
  return control.Guidance(terms=tuple(terms), num_steps=_K.value, step_size=_STEP_SIZE.value,
                          fluency_weight=_LAMBDA.value)


def _decoder(run, **kw):
  return control.make_decoder(run, sampler=_SAMPLER.value, steps=_STEPS.value, **kw)


def _fluency(run, ids):
  r = evaluate.nll_of_ids(run, ids, np.ones_like(ids), num_t=_NLL_T.value, seed=_SEED.value,
                          batch_size=_BATCH.value)
  return {"nll_bits_per_token": r["bits_per_token"], "nll_estimator": r["estimator"]}


def _validation(run):
  return pipeline.prepare_sources(run.config.data)["validation"]


def task_accuracy(clf_dir):
  clf = generate.load_run(clf_dir)
  encode = pipeline.make_encoder(clf.tokenizer, clf.config.data)
  val = pipeline.prepare_sources(clf.config.data)["validation"]
  rows = [encode(val[i]) for i in range(min(len(val), 512))]
  batches = [{k: np.stack([r[k] for r in rows[i:i + 64]]) for k in ("ids", "target_mask", "label")}
             for i in range(0, len(rows), 64)]
  T = clf.context.diffusion.num_steps
  ts = sorted({0, T // 10, T // 4, T // 2, 3 * T // 4, T})
  return {"classifier": clf_dir, "examples": len(rows),
          "by_t": classifier.accuracy_by_noise(clf, batches, ts)}


def task_semantic(lm, clf_dir):
  clf = _classifier_of(lm, clf_dir)
  split = pipeline.prepare_sources(lm.config.data)[_SPLIT.value]
  counts = collections.Counter(fv for i in range(len(split))
                               for fv in sources.e2e_mr_fields(pipeline._text(split[i]["src"])))
  targets = []
  for (field, value), _ in counts.most_common():
    try:
      targets.append((field, value, classifier.np_word_ids(lm.tokenizer, value)))
    except ValueError:
      continue  # a value with out-of-vocabulary words cannot be steered towards
    if len(targets) == _NUM_TARGETS.value:
      break
  n = _PER_TARGET.value
  K = max(len(t[2]) for t in targets)
  labels = np.full((len(targets) * n, K), -1, np.int32)
  for j, (_, _, ids) in enumerate(targets):
    labels[j * n:(j + 1) * n, :len(ids)] = ids
  results = {}
  for name, out, texts, seconds in _unguided_and_guided(lm, clf, labels, "word_classifier"):
    hits = [f" {targets[i // n][1]} " in f" {t} " for i, t in enumerate(texts)]
    results[name] = {"success": float(np.mean(hits)), "seconds": seconds,
                     **_fluency(lm, out), **metrics.dist_1(texts),
                     "examples": [{"target": f"{targets[i // n][0]}={targets[i // n][1]}",
                                   "text": texts[i]} for i in range(0, len(texts), n)]}
    logging.info("semantic %s: success %.3f", name, results[name]["success"])
  return {"split": _SPLIT.value, "targets": [f"{f}={v}" for f, v, _ in targets], "per_target": n,
          **results}


def _unguided_and_guided(lm, clf, labels, term_name):
  """(name, output ids, texts, seconds) of unconditional sampling without and with the classifier
  term towards each row's ``labels`` (N, K)."""
  ids0, mask = generate.unconditional_inputs(len(labels), lm.config.data.max_len)
  term = control.classifier_term(classifier.log_prob_fn(clf.model, clf.params, clf.config),
                                 weight=_WEIGHT.value, name=term_name)
  for name, guidance in (("unguided", None), ("guided", _guidance(term))):
    t0 = time.time()
    out = control.generate_ids(_decoder(lm, guidance=guidance), ids0, mask,
                               (labels,) if guidance else (), batch_size=_BATCH.value,
                               seed=_SEED.value)
    yield name, out, [lm.decode(r) for r in out], round(time.time() - t0, 1)


def _classifier_of(lm, clf_dir):
  clf = generate.load_run(clf_dir)
  if clf.config.model.family != "classifier":
    raise ValueError(f"{clf_dir} is not a classifier run")
  if os.path.abspath(clf.config.classifier.base_run) != os.path.abspath(lm.workdir):
    raise ValueError(f"{clf_dir} was trained on {clf.config.classifier.base_run}, not {lm.workdir}")
  return clf


def task_sentiment(lm, clf_dir, judge_dir):
  clf, judge = _classifier_of(lm, clf_dir), _classifier_of(lm, judge_dir)
  if clf.config.classifier.labels != "label" or judge.config.classifier.max_t != 0:
    raise ValueError("sentiment needs a label classifier (--classifier) and a clean-text judge "
                     "(--judge, classifier.max_t = 0)")
  C, n = clf.config.classifier.num_classes, _PER_TARGET.value
  want = np.repeat(np.arange(C), n)
  val = _validation(lm)
  held = [(pipeline._text(val[i]["tgt"]), int(val[i]["label"])) for i in range(min(len(val), 1000))]
  judge_acc = float(np.mean(np.argmax(classifier.judge(judge, [t for t, _ in held]), -1)
                            == np.array([y for _, y in held])))
  results = {}
  for name, out, texts, seconds in _unguided_and_guided(lm, clf, want[:, None].astype(np.int32),
                                                        "sentiment"):
    got = np.argmax(classifier.judge(judge, texts), -1)
    results[name] = {"success": float(np.mean(got == want)), "seconds": seconds,
                     **_fluency(lm, out), **metrics.dist_1(texts),
                     "examples": [{"target": int(want[i]), "judged": int(got[i]), "text": texts[i]}
                                  for i in range(0, len(texts), max(n // 2, 1))]}
    logging.info("sentiment %s: success %.3f", name, results[name]["success"])
  return {"classes": C, "per_target": n, "judge_accuracy_on_dev_text": judge_acc,
          "judge_examples": len(held), **results}


def task_length(lm):
  lengths = [int(x) for x in _LENGTHS.value]
  n = _PER_TARGET.value
  L = lm.config.data.max_len
  rows = [control.length_inputs(k, L) for k in lengths for _ in range(n)]
  ids, mask = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
  want = np.repeat(lengths, n)
  avoid = control.avoid_tokens_term(embeddings.table(lm.params, lm.config.model),
                                    lm.diffusion,
                                    [tokenizers.PAD, tokenizers.EOS], weight=_WEIGHT.value)
  results = {}
  t0 = time.time()
  free = control.generate_ids(_decoder(lm), *generate.unconditional_inputs(len(rows), L), (),
                              batch_size=_BATCH.value, seed=_SEED.value)
  free_len = np.array([len(lm.decode(r).split()) for r in free])
  results["unguided"] = {"success": float(np.mean(free_len == want)),
                         "seconds": round(time.time() - t0, 1), **_fluency(lm, free)}
  for name, guidance, args in (("mask", None, ()), ("mask+avoid_pad_eos", _guidance(avoid), (mask,))):
    t0 = time.time()
    out = control.generate_ids(_decoder(lm, guidance=guidance), ids, mask, args,
                               batch_size=_BATCH.value, seed=_SEED.value)
    texts = [lm.decode(r) for r in out]
    got = np.array([len(t.split()) for t in texts])
    results[name] = {"success": float(np.mean(got == want)),
                     "mean_abs_error": float(np.mean(np.abs(got - want))),
                     "seconds": round(time.time() - t0, 1), **_fluency(lm, out),
                     "examples": [{"length": int(want[i]), "text": texts[i]}
                                  for i in range(0, len(texts), n)]}
    logging.info("length %s: success %.3f", name, results[name]["success"])
  return {"lengths": lengths, "per_target": n, **results}


def task_infill(lm):
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
    if len(rows) == _NUM_INPUTS.value:
      break
  ids, mask = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
  t0 = time.time()
  out = control.generate_ids(_decoder(lm), ids, mask, (), batch_size=_BATCH.value,
                             seed=_SEED.value)
  fills = [control.infill_text(lm.tokenizer, o, m) for o, m in zip(out, mask)]
  context_kept = bool(np.all(out[mask == 0] == ids[mask == 0]))
  refs = [[o] for o in originals]
  return {"num_inputs": len(rows), "context_tokens_unchanged": context_kept,
          **metrics.bleu(fills, refs), **metrics.rouge_l(fills, refs),
          "seconds": round(time.time() - t0, 1),
          "examples": [{"context": lm.decode(i), "original_middle": o, "fill": f}
                       for i, o, f in list(zip(ids, originals, fills))[:10]]}


def task_cfg(lm):
  groups = evaluate.grouped_references(_validation(lm), _NUM_INPUTS.value)
  srcs, refs = [g[0] for g in groups], [g[1] for g in groups]
  ids, mask = lm.pack_sources(srcs)
  results = []
  for s in [float(x) for x in _SCALES.value]:
    t0 = time.time()
    out = control.generate_ids(_decoder(lm, cfg_scale=s), ids, mask, (), batch_size=_BATCH.value,
                               seed=_SEED.value)
    hyps = [lm.decode(r) for r in out]
    results.append({"scale": s, **metrics.bleu(hyps, refs), **metrics.rouge_l(hyps, refs),
                    **metrics.dist_1(hyps), "seconds": round(time.time() - t0, 1),
                    "examples": hyps[:3]})
    logging.info("cfg scale %.2f: %s", s, {k: v for k, v in results[-1].items() if k != "examples"})
  return {"num_inputs": len(srcs), "by_scale": results}


def run():
  task = _TASK.value
  if task is None:
    raise common.UserError(f"--task is required: one of {', '.join(TASKS)}")
  needs_lm, needs_clf = task != "accuracy", task in ("semantic", "accuracy", "sentiment")
  if needs_lm and not _LM.value:
    raise common.UserError(f"--task {task} needs --lm (a diffusion run)")
  if needs_clf and not _CLF.value:
    raise common.UserError(f"--task {task} needs --classifier (a classifier run)")
  if task == "sentiment" and not _JUDGE.value:
    raise common.UserError("--task sentiment needs --judge (a clean-text label classifier run)")
  lm = (generate.load_run(_LM.value, scan_layers=common.scan_layers(_LAYERS.value)) if needs_lm
        else None)
  if lm is not None and lm.config.model.family != "diffusion":
    raise common.UserError(f"--lm {_LM.value} is not a diffusion run")
  if task in ("semantic", "length", "infill", "sentiment") and lm.is_seq2seq:
    raise common.UserError(f"--task {task} needs an unconditional LM; {_LM.value} is seq2seq")
  if task == "cfg" and not lm.is_seq2seq:
    raise common.UserError(f"--task cfg needs a seq2seq run; {_LM.value} is unconditional")
  try:
    result = {"accuracy": lambda: task_accuracy(_CLF.value),
              "semantic": lambda: task_semantic(lm, _CLF.value),
              "length": lambda: task_length(lm), "infill": lambda: task_infill(lm),
              "cfg": lambda: task_cfg(lm),
              "sentiment": lambda: task_sentiment(lm, _CLF.value, _JUDGE.value)}[task]()
  except ValueError as e:
    raise common.UserError(str(e)) from e
  result.update(task=task, lm=_LM.value, sampler=_SAMPLER.value, steps=_STEPS.value,
                seed=_SEED.value, lm_step=lm.step if lm else None,
                guidance={"K": _K.value, "step_size": _STEP_SIZE.value,
                          "fluency_weight": _LAMBDA.value, "weight": _WEIGHT.value})
  out_dir = _OUT.value or os.path.join(_LM.value or _CLF.value, "control")
  # a train-split selection run never overwrites the dev result
  suffix = f"_{_SPLIT.value}" if task == "semantic" and _SPLIT.value != "validation" else ""
  path = os.path.join(out_dir, f"{task}{suffix}.json")
  common.write_atomic(path, json.dumps(result, indent=2))
  print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2)[:4000])
  logging.info("wrote %s", path)


if __name__ == "__main__":
  common.run_app(run)
