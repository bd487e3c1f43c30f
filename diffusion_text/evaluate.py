"""Evaluation of a trained run: generate for held-out inputs, MBR-select, score with ``metrics``.

Seq2seq runs are evaluated per *distinct* source against all its references (E2E's test set has 630
MRs with several references each, scored as the E2E challenge does). Unconditional runs report the
diversity and length of ``num_inputs`` samples.
"""
import collections
import json
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np

from diffusion_text import cloze, decoding, heldout, likelihood, mbr, metrics
from diffusion_text.data import e2e, pipeline
from diffusion_text.errors import DataError
from diffusion_text.generate import Run


def grouped_references(source, limit: Optional[int] = None):
  """[(src, [refs...])] in order of first appearance, from a data source of records."""
  groups = collections.OrderedDict()
  for i in range(len(source)):
    r = source[i]
    groups.setdefault(pipeline._text(r["src"]), []).append(pipeline._text(r["tgt"]))
  items = list(groups.items())
  return items[:limit] if limit else items


def real_texts(run: Run, split: str, n: int) -> list[str]:
  """The first ``n`` distinct texts of an unconditional run's ``split``."""
  data = pipeline.prepare_sources(run.config.data)
  if split not in data:
    raise ValueError(f"split {split!r} not in dataset; have {sorted(data)}")
  texts = dict.fromkeys(pipeline._text(data[split][i]["tgt"]) for i in range(len(data[split])))
  return list(texts)[:n]


def lm_score(teacher: Run, hyps, sources=None, batch_size: int = 64) -> dict:
  """Diffusion-LM's lm-score: perplexity of ``hyps`` under an AR ``teacher`` run trained on the same
  data and tokenizer (given ``sources`` for a seq2seq teacher), over real tokens and EOS."""
  if teacher.config.model.family != "ar":
    raise ValueError(f"lm-score teacher {teacher.workdir} is not an AR run")
  if teacher.is_seq2seq != (sources is not None):
    raise ValueError("a seq2seq teacher scores hyps given their sources (and an LM teacher none)")
  d, tok = teacher.config.data, teacher.tokenizer
  if sources is not None:
    packed = [pipeline.pack(d, tok.encode(s), tok.encode(h)) for s, h in zip(sources, hyps)]
  else:
    packed = [(tok.encode_padded(h, d.max_len), np.ones((d.max_len,), np.int32)) for h in hyps]
  ids = np.stack([p[0] for p in packed])
  mask = np.stack([p[1] for p in packed])

  fn = jax.jit(lambda p, ids, m, rng: likelihood.ar_nll_terms(teacher.model, p, ids, m))
  out = heldout.map_batches(fn, teacher.params, ids, mask, batch_size, seed=0)
  total, count = float(out["nll"].sum()), float(out["real_tokens"].sum())
  return {"lm_score": float(np.exp(total / max(count, 1.0))), "lm_score_teacher": teacher.workdir}


STEPLESS_SAMPLERS = ("greedy", "sample")  # AR decoders; beam's steps are its width


def result_name(split: str, step: int, sampler: str, steps: int, mbr_samples: int, *,
                clamp: bool = False, num_inputs: int = 0, seed: int = 0,
                collapse: bool = False, eta: float = 0.0, commit: bool = False,
                rerank: str = "mbr", score_temp: float = 1.0, logit_temp: float = 1.0,
                grid_power: float = 1.0, rounding: str = "model",
                slot_guidance: float = 0.0, cfg_scale: float = 1.0) -> str:
  """File stem of an evaluation: every setting that changes the numbers is in it, so evaluations of
  one checkpoint with other settings never overwrite each other (``_clamp``, ``_commit``,
  ``_collapse``, ``_n<inputs>`` when not all inputs, ``_seed<s>`` when not 0, ``_eta<eta>`` when
  not 0, ``_slotrerank``, ``_st<score_temp>``, ``_lt<logit_temp>`` and ``_gp<grid_power>`` when
  not 1, ``_round<rounding>`` when not the model's, ``_sg<slot_guidance>`` when not 0,
  ``_cfg<cfg_scale>`` when not 1). The AR decoders that take no steps (``STEPLESS_SAMPLERS``)
  carry none in the name."""
  steps = "" if sampler in STEPLESS_SAMPLERS else steps
  return (f"{split}_step{step}_{sampler}{steps}_mbr{mbr_samples}" + ("_clamp" if clamp else "")
          + ("_commit" if commit else "") + ("_collapse" if collapse else "")
          + (f"_n{num_inputs}" if num_inputs else "") + (f"_seed{seed}" if seed else "")
          + (f"_eta{eta:g}" if eta else "") + ("_slotrerank" if rerank == "slots" else "")
          + (f"_st{score_temp:g}" if score_temp != 1.0 else "")
          + (f"_lt{logit_temp:g}" if logit_temp != 1.0 else "")
          + (f"_gp{grid_power:g}" if grid_power != 1.0 else "")
          + (f"_round{rounding}" if rounding != "model" else "")
          + (f"_sg{slot_guidance:g}" if slot_guidance else "")
          + (f"_cfg{cfg_scale:g}" if cfg_scale != 1.0 else ""))


def read_inputs(path: str) -> list[dict]:
  """Records of a JSON Lines file of ``{"src": ..., "trg": ...}`` pairs (DiffuSeq's format), as a
  data source for ``grouped_references``. Raises ValueError naming ``file:line`` on a bad line."""
  if not os.path.isfile(path):
    raise ValueError(f"inputs file not found: {path}")
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        r = json.loads(line)
        out.append({"src": r["src"], "tgt": r["trg"]})
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{n}: not a JSON object with 'src' and 'trg' ({e})") from e
  if not out:
    raise ValueError(f"{path} holds no pairs")
  return out


def human_yardstick(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict:
  """A person's text beside the outputs, on the inputs with two or more references: the outputs'
  BLEU and their first reference's, both against the other references (``human_inputs`` of them);
  {} when no input has two."""
  keep = [i for i, r in enumerate(refs) if len(r) > 1]
  if not keep:
    return {}
  others = [refs[i][1:] for i in keep]
  return {"human_inputs": len(keep),
          "bleu_vs_other_refs": metrics.bleu([hyps[i] for i in keep], others)["bleu"],
          "human_bleu_vs_other_refs": metrics.bleu([refs[i][0] for i in keep], others)["bleu"]}


def evaluate_run(run: Run, *, split: str = "validation", num_inputs: int = 0,
                 mbr_samples: int = 1, seed: int = 0, teacher: Optional[Run] = None,
                 inputs: Optional[str] = None, rerank: str = "mbr",
                 **sample_kwargs) -> tuple[dict, list[dict]]:
  """(metrics, per-input outputs) for ``run`` on ``split``, or on the pairs of the JSON Lines file
  ``inputs`` (seq2seq runs) instead; ``sample_kwargs`` go to ``generate``. With an AR ``teacher``
  run, also the lm-score of the outputs (for a seq2seq run with it, ``corpus_self_bleu``: the
  outputs' self-BLEU against each other, the diversity measure of unconditional samples)."""
  t0 = time.time()
  if inputs is not None and not run.is_seq2seq:
    raise ValueError("inputs (a file of src/trg pairs) needs a seq2seq run")
  if run.is_seq2seq:
    in_place = run.config.data.target_start == "in_place"
    # with inputs, the run's own data is read only for the cloze's baseline word (its train split):
    # an exported model's training data need not be there
    data = {} if inputs is not None and not in_place else pipeline.prepare_sources(run.config.data)
    if inputs is not None:
      data = {**data, split: read_inputs(inputs)}
    elif split not in data:
      raise ValueError(f"split {split!r} not in dataset; have {sorted(data)}")
    groups = grouped_references(data[split], num_inputs or None)
    srcs = [g[0] for g in groups]
    refs = [g[1] for g in groups]
    samples, hyps = _candidates(run, srcs, mbr_samples, seed, rerank, sample_kwargs)
    result = metrics.evaluate_texts(hyps, refs, samples)
    result["source_bleu"] = metrics.bleu(srcs, refs)["bleu"]  # the input returned unchanged
    result.update(human_yardstick(hyps, refs))
    if in_place:
      result.update(cloze.blank_accuracy(srcs, hyps, refs, cloze.most_common_blank(data["train"]),
                                         cloze.NeighbourFiller(data["train"])))
    outputs = [{"src": s, "hyp": h, "refs": r, "samples": c}
               for s, h, r, c in zip(srcs, hyps, refs, samples)]
    if e2e.is_e2e(srcs):  # faithfulness beside BLEU: fields missing, wrong, added or repeated
      checks = [e2e.check(o["src"], o["hyp"]) for o in outputs]
      result["slots"] = e2e.score(outputs, checks)
      result.update({k: result["slots"][k] for k in e2e.HEADLINE})
      for o, c in zip(outputs, checks):
        o["slot_errors"] = {f: v for f, v in c.items() if v != "ok"}
    if teacher is not None:
      result.update(lm_score(teacher, hyps, srcs if teacher.is_seq2seq else None))
      # fluency beside diversity across inputs, as for unconditional samples (plan-then-write)
      result["corpus_self_bleu"] = metrics.self_bleu([hyps])["self_bleu"]
  else:
    n = num_inputs or 64
    hyps = run.generate(n, seed=seed, **sample_kwargs)
    # the samples beside the same number of real texts of the split, scored the same way (fluency:
    # lm-score; diversity: dist-1 and self-BLEU over the set)
    real = real_texts(run, split, n)
    result = {**metrics.dist_1(hyps), **metrics.mean_len(hyps), **metrics.self_bleu([hyps])}
    result.update({f"real_{k}": v for k, v in {**metrics.dist_1(real), **metrics.mean_len(real),
                                               **metrics.self_bleu([real])}.items()})
    outputs = [{"hyp": h} for h in hyps]
    if teacher is not None:
      result.update(lm_score(teacher, hyps))
      result["real_lm_score"] = lm_score(teacher, real)["lm_score"]
  if inputs is not None:
    result["inputs"] = os.path.abspath(inputs)
  result.update(split=split, num_inputs=len(hyps), mbr_samples=mbr_samples, rerank=rerank, seed=seed,
                checkpoint_step=run.step, seconds=round(time.time() - t0, 1),
                **sampling_settings(run, sample_kwargs))
  if result.get("collapse") is None:
    result["collapse"] = bool(run.config.sample.collapse_repeats)
  return result, outputs


def _candidates(run: Run, srcs, mbr_samples: int, seed: int, rerank: str, sample_kwargs: dict):
  """(each source's candidate texts, the one kept): ``mbr_samples`` samples (seeds ``seed``, ...)
  and MBR, with ``rerank="slots"`` among those with the fewest E2E slot errors; for AR beam
  search with ``rerank="slots"``, the candidates are the beam's n-best list and the first with
  the fewest slot errors is kept (``e2e.rerank``)."""
  if rerank == "slots" and not e2e.is_e2e(srcs):
    raise ValueError("rerank=slots scores E2E MRs; these sources are not")
  sampler = sample_kwargs.get("sampler") or run.config.sample.sampler
  if rerank == "slots" and run.config.model.family == "ar" and sampler == "beam":
    if mbr_samples != 1:
      raise ValueError("beam search's candidates are its n-best list: use mbr_samples=1")
    beam = int(sample_kwargs.get("steps") or run.config.sample.steps or 1)
    samples = run.generate_nbest(srcs, beam, collapse=sample_kwargs.get("collapse"))
    return samples, e2e.rerank(srcs, samples)
  per_seed = [run.generate(sources=srcs, seed=seed + k, **sample_kwargs)
              for k in range(mbr_samples)]
  samples = [list(c) for c in zip(*per_seed)]
  costs = ([[e2e.errors(s, x) for x in c] for s, c in zip(srcs, samples)]
           if rerank == "slots" else None)
  return samples, mbr.mbr_decode(samples, costs)


def sampling_settings(run: Run, sample_kwargs: dict) -> dict:
  """What an evaluation ran, defaults included: the run (workdir, task, dataset) and every
  sampling setting, the ones not passed read from the run's ``config.sample``."""
  s, d = run.config.sample, run.config.data
  out = {"workdir": os.path.abspath(run.workdir), "task": d.task, "dataset": d.dataset,
         "sampler": s.sampler, "clamp": bool(s.clamp), "eta": float(s.eta),
         "commit": bool(s.commit), "batch_size": int(s.batch_size)}
  if run.config.model.family == "diffusion":
    out["steps"] = int(s.steps or run.config.diffusion.num_steps)
    out.update(decoding.dials(s))
    if s.get("grid"):  # a step-distilled student's own timesteps
      out["grid"] = [int(t) for t in s.grid]
  elif s.sampler == "beam":
    out["steps"] = int(s.steps)
  out.update({k: v for k, v in sample_kwargs.items() if v is not None})
  return out


def read_results(path: str) -> list[dict]:
  """The per-input lines (``src``, ``hyp``, ``refs``) of an evaluation's ``.jsonl``; a line that is
  not one raises ``DataError`` naming ``path:line``."""
  if not os.path.isfile(path):
    raise DataError(f"results file not found: {path}")
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      try:
        row = json.loads(line)
        ok = (isinstance(row, dict) and isinstance(row.get("src"), str)
              and isinstance(row.get("hyp"), str) and isinstance(row.get("refs"), list)
              and len(row["refs"]) > 0)
      except json.JSONDecodeError:
        ok = False
      if not ok:
        raise DataError(f"{path}:{n}: not an evaluation line with 'src', 'hyp' and 'refs'")
      rows.append(row)
  if not rows:
    raise DataError(f"{path} holds no results")
  return rows
