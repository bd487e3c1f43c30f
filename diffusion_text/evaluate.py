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
import jax.numpy as jnp
import numpy as np

from diffusion_text import (batching, decoding, embeddings, likelihood, mbr, metrics, process,
                            sharding, train)
from diffusion_text.data import e2e, pipeline, sources, tokenizers
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


def _slot_pairs(source):
  """(source words, target words) of each record of a word-aligned cloze split."""
  for i in range(len(source)):
    yield pipeline._text(source[i]["src"]).split(), pipeline._text(source[i]["tgt"]).split()


def most_common_blank(source) -> str:
  """The word most often behind a slot (``sources.SLOT``) of a word-aligned cloze split."""
  counts = collections.Counter()
  for src, tgt in _slot_pairs(source):
    counts.update(t for s, t in zip(src, tgt) if s == sources.SLOT)
  return counts.most_common(1)[0][0] if counts else ""


class NeighbourFiller:
  """A count model of a cloze: it writes in a slot the word the training split most often has
  between the same two neighbouring source words (a neighbour may itself be a slot; sentence ends
  are ``<s>`` and ``</s>``), backing off to the same left neighbour, then the same right neighbour,
  then ``most_common_blank``. A context is used once it was seen twice."""

  def __init__(self, source):
    self.counts = [collections.defaultdict(collections.Counter) for _ in range(3)]
    for src, tgt in _slot_pairs(source):
      for k, (s, t) in enumerate(zip(src, tgt)):
        if s == sources.SLOT:
          for table, key in zip(self.counts, self._contexts(src, k)):
            table[key][t] += 1
    self.fallback = most_common_blank(source)

  @staticmethod
  def _contexts(src, k):
    left = src[k - 1] if k > 0 else "<s>"
    right = src[k + 1] if k + 1 < len(src) else "</s>"
    return (left, right), left, right

  def __call__(self, src, k) -> str:
    """The word for slot ``k`` of the source words ``src``."""
    for table, key in zip(self.counts, self._contexts(src, k)):
      c = table.get(key)
      if c and sum(c.values()) >= 2:
        return c.most_common(1)[0][0]
    return self.fallback


def blank_accuracy(srcs, hyps, refs, baseline_word: str, neighbour_filler=None) -> dict:
  """For a cloze (``in_place``): the share of slots whose output word is the reference's word at
  that position (first reference), and the share a filler writing ``baseline_word`` in every slot
  gets (and, with ``neighbour_filler``, the share that count model gets). An output of another
  length than its source counts its slots as wrong."""
  right = base = near = total = 0
  for src, hyp, ref in zip(srcs, hyps, refs):
    s, h, r = src.split(), hyp.split(), ref[0].split()
    for k, w in enumerate(s):
      if w == sources.SLOT and k < len(r):
        total += 1
        right += len(h) == len(s) and h[k] == r[k]
        base += r[k] == baseline_word
        near += neighbour_filler is not None and neighbour_filler(s, k) == r[k]
  out = {"blank_accuracy": right / max(total, 1), "blank_baseline_word": baseline_word,
         "blank_baseline_accuracy": base / max(total, 1), "blanks": total}
  if neighbour_filler is not None:
    out["blank_neighbour_accuracy"] = near / max(total, 1)
  return out


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
  out = _map_batches(fn, teacher.params, ids, mask, batch_size, seed=0)
  total, count = float(out["nll"].sum()), float(out["real_tokens"].sum())
  return {"lm_score": float(np.exp(total / max(count, 1.0))), "lm_score_teacher": teacher.workdir}


def _map_batches(fn, params, ids, mask, batch_size: int, seed: int) -> dict:
  """``fn(params, ids, mask, rng) -> {name: (B,)}`` over rows in fixed-size batches (the last one
  padded with copies, so one compiled shape serves all; padded rows are dropped)."""
  parts = []
  for start, n, (b_ids, b_mask) in batching.padded_batches(batch_size, ids, mask):
    out = jax.device_get(fn(params, b_ids, b_mask, jax.random.PRNGKey(seed + start)))
    parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


STEPLESS_SAMPLERS = ("greedy", "sample")  # AR decoders; beam's steps are its width


def result_name(split: str, step: int, sampler: str, steps: int, mbr_samples: int, *,
                clamp: bool = False, num_inputs: int = 0, seed: int = 0,
                collapse: bool = False, eta: float = 0.0, commit: bool = False) -> str:
  """File stem of an evaluation: every setting that changes the numbers is in it, so evaluations of
  one checkpoint with other settings never overwrite each other (``_clamp``, ``_commit``,
  ``_collapse``, ``_n<inputs>`` when not all inputs, ``_seed<s>`` when not 0, ``_eta<eta>`` when
  not 0). The AR decoders that take no steps (``STEPLESS_SAMPLERS``) carry none in the name."""
  steps = "" if sampler in STEPLESS_SAMPLERS else steps
  return (f"{split}_step{step}_{sampler}{steps}_mbr{mbr_samples}" + ("_clamp" if clamp else "")
          + ("_commit" if commit else "") + ("_collapse" if collapse else "")
          + (f"_n{num_inputs}" if num_inputs else "") + (f"_seed{seed}" if seed else "")
          + (f"_eta{eta:g}" if eta else ""))


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
                 inputs: Optional[str] = None, **sample_kwargs) -> tuple[dict, list[dict]]:
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
    per_seed = [run.generate(sources=srcs, seed=seed + k, **sample_kwargs)
                for k in range(mbr_samples)]
    samples = [list(c) for c in zip(*per_seed)]
    hyps = mbr.mbr_decode(samples)
    result = metrics.evaluate_texts(hyps, refs, samples)
    result["source_bleu"] = metrics.bleu(srcs, refs)["bleu"]  # the input returned unchanged
    result.update(human_yardstick(hyps, refs))
    if in_place:
      result.update(blank_accuracy(srcs, hyps, refs, most_common_blank(data["train"]),
                                   NeighbourFiller(data["train"])))
    outputs = [{"src": s, "hyp": h, "refs": r, "samples": c}
               for s, h, r, c in zip(srcs, hyps, refs, samples)]
    if e2e.is_e2e(srcs):  # faithfulness beside BLEU: fields missing, wrong, added or repeated
      result["slots"] = e2e.score(outputs)
      result.update({k: result["slots"][k] for k in e2e.HEADLINE})
      for o in outputs:
        o["slot_errors"] = {f: v for f, v in e2e.check(o["src"], o["hyp"]).items() if v != "ok"}
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
  result.update(split=split, num_inputs=len(hyps), mbr_samples=mbr_samples, seed=seed,
                checkpoint_step=run.step, seconds=round(time.time() - t0, 1),
                **sampling_settings(run, sample_kwargs))
  if result.get("collapse") is None:
    result["collapse"] = bool(run.config.sample.collapse_repeats)
  return result, outputs


def sampling_settings(run: Run, sample_kwargs: dict) -> dict:
  """What an evaluation ran, defaults included: the run (workdir, task, dataset) and every
  sampling setting, the ones not passed read from the run's ``config.sample``."""
  s, d = run.config.sample, run.config.data
  out = {"workdir": os.path.abspath(run.workdir), "task": d.task, "dataset": d.dataset,
         "sampler": s.sampler, "clamp": bool(s.clamp), "eta": float(s.eta),
         "commit": bool(s.commit), "score_temp": float(s.score_temp),
         "batch_size": int(s.batch_size)}
  if run.config.model.family == "diffusion":
    out["steps"] = int(s.steps or run.config.diffusion.num_steps)
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


def nll_run(run: Run, *, split: str = "validation", num_inputs: int = 0, num_t: int = 16,
            seed: int = 0, batch_size: int = 64) -> dict:
  """Bits per token of ``split`` (every example; the first ``num_inputs`` if set): the variational
  bound with ``num_t`` stratified timesteps for diffusion runs, the exact NLL for AR runs."""
  t0 = time.time()
  data = pipeline.prepare_sources(run.config.data)
  if split not in data:
    raise ValueError(f"split {split!r} not in dataset; have {sorted(data)}")
  source = pipeline.model_examples(data[split], run.tokenizer, run.config.data)
  n = min(len(source), num_inputs or len(source))
  encode = pipeline.make_encoder(run.tokenizer, run.config.data)
  rows = [encode(source[i]) for i in range(n)]
  ids = np.stack([r["ids"] for r in rows])
  mask = np.stack([r["target_mask"] for r in rows])
  result = nll_of_ids(run, ids, mask, num_t=num_t, seed=seed, batch_size=batch_size)
  result.update(split=split, seconds=round(time.time() - t0, 1))
  return result


def loss_run(run: Run, *, split: str = "validation") -> dict:
  """The training loop's held-out loss terms (EMA parameters, the first ``eval.num_batches``
  batches of ``split``, the same per-batch seeds) for the loaded checkpoint: with today's code, so
  runs written by older code or with training-only levers (``t_power``, soft absorbing) compare."""
  data = pipeline.prepare_sources(run.config.data)
  if split not in data:
    raise ValueError(f"split {split!r} not in dataset; have {sorted(data)}")
  c = run.config
  mesh = run.mesh or sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  batches = train.held_out_batches(c, pipeline.model_examples(data[split], run.tokenizer, c.data),
                                   pipeline.make_encoder(run.tokenizer, c.data), mesh)
  with sharding.mesh_context(mesh, sharding.axis_rules(c)):
    terms = train.evaluate(jax.jit(train.make_eval_step(run.model, c, run.context)), run.params, batches, mesh,
                           c.seed, c.eval.batch_size)
  return {**terms, "split": split, "num_batches": len(batches), "checkpoint_step": run.step}


def nll_of_ids(run: Run, ids, mask, *, num_t: int = 16, seed: int = 0,
               batch_size: int = 64) -> dict:
  """Bits per token of packed rows' mask-1 positions under ``run`` (bound or exact NLL)."""
  is_ar = run.config.model.family == "ar"
  num_steps = run.config.diffusion.num_steps
  if not is_ar and not 1 <= num_t <= num_steps - 1:
    raise ValueError(f"nll_t must be in [1, T-1 = {num_steps - 1}] (T-1 is the exact grid), "
                     f"got {num_t}")
  fn = jax.jit(lambda p, ids, m, rng: likelihood.nll_terms(
      run.model, p, ids, m, run.config.model.family, run.diffusion, rng, num_t,
      run.config.model))
  per_seq = _map_batches(fn, run.params, np.asarray(ids), np.asarray(mask), batch_size, seed)
  result = likelihood.summarize(per_seq)
  result.update(estimator="exact AR NLL" if is_ar else f"ELBO, {num_t} stratified t",
                checkpoint_step=run.step)
  return result


def recovery(run: Run, t0s, num_inputs, steps, sampler, split="validation", seed=0) -> list[dict]:
  """BLEU of sampling from q(x_t0 | x0) back to 0, against the target it started from, per t0
  (the ``recovery`` evaluator): where along the chain a model stops being able to write the text.

  Each row also scores the denoiser's own one-step word prediction at t0
  (``decoding.one_step_ids``): ``one_step_bleu`` and ``token_acc`` (on the target's non-PAD
  positions). When the trajectory's BLEU falls below the one-step BLEU, the sampler loses a plan the
  model had read from x_t0; when both are low, the model cannot read the plan at that noise level.
  """
  source = pipeline.prepare_sources(run.config.data)[split]
  encode = pipeline.make_encoder(run.tokenizer, run.config.data)
  idx = list(range(0, len(source), 10))[:num_inputs]
  rows = [encode(source[i]) for i in idx]
  ids = jnp.asarray(np.stack([r["ids"] for r in rows]))
  mask = jnp.asarray(np.stack([r["target_mask"] for r in rows]))
  refs = [[run.decode(r["ids"])] for r in rows]
  emb = embeddings.table(run.params, run.config.model)
  ab, T = run.diffusion.alpha_bar, run.diffusion.num_steps
  x0 = embeddings.embed(emb, ids)
  out = []
  for t0 in t0s:
    if not 1 <= t0 <= T:
      raise ValueError(f"t0 must be in [1, T={T}], got {t0}")
    grid = np.unique(np.round(np.linspace(t0, 0, steps + 1)).astype(np.int32))[::-1]
    eps = jax.random.normal(jax.random.PRNGKey(seed), x0.shape)
    z = process.q_sample(x0, ab[jnp.full((len(rows),), t0)], eps, mask)
    got = np.asarray(decoding.decode_ids(run.model, run.params, run.config, run.diffusion,
                                         jax.random.PRNGKey(seed + 1), ids, mask, sampler=sampler,
                                         grid=grid, x_init_BxLxE=z))
    hyps = [run.decode(r) for r in got]
    t_B = jnp.full((len(rows),), t0, jnp.int32)
    pred = decoding.one_step_ids(run.model, run.params, run.config, z, t_B)
    one = np.asarray(jnp.where(mask > 0, pred, ids))
    words = (mask > 0) & (ids != tokenizers.PAD)
    acc = float(jnp.sum((pred == ids) & words) / jnp.maximum(jnp.sum(words), 1))
    out.append({"t0": int(t0), "alpha_bar": float(ab[t0]), **metrics.bleu(hyps, refs),
                "one_step_bleu": metrics.bleu([run.decode(r) for r in one], refs)["bleu"],
                "token_acc": acc, "example": hyps[0], "target": refs[0][0]})
  return out
