"""Sequence-level knowledge distillation (Kim & Rush 2016): an AR teacher's outputs as training data.

E2E has about 8.7 references per meaning representation; at high noise a non-autoregressive
denoiser sees their per-position mixture. Training it on one deterministic output per source (the
teacher's greedy or beam decode) removes that ambiguity (Gu et al. 2018; used by Difformer,
DiNoiSer and DiffuSeq-v2).

``distill_dataset`` writes DiffuSeq JSON Lines that ``data.dataset = "jsonl:NAME"`` reads:
``train.jsonl`` holds one teacher output per distinct train source; ``valid.jsonl`` and
``test.jsonl`` hold the real references (every pair), so evaluation is against the data, never
against the teacher.

``recombine`` adds sources the data never had: for structured sources (``key : value`` fields
joined by `` | ``, as E2E's meaning representations), new combinations of the train sources' fields,
which the teacher then writes. The student sees field combinations and sizes the train set
has few of, without any reference text that is not the teacher's.
"""
import collections
import json
import os
import random
import shutil
import time

from absl import logging
import numpy as np

from diffusion_text import evaluate
from diffusion_text.data import e2e, mr, pipeline
from diffusion_text.errors import UserError
from diffusion_text.generate import Run

SPLIT_FILES = {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"}
INFO_FILE = "distill.json"
HELDOUT_FILE = "heldout.jsonl"
HELDOUT_SPLIT = "heldout"


def recombine_sources(sources: list[str], num: int, seed: int = 0, exclude=()) -> list[str]:
  """``num`` new structured sources, each a new combination of the given sources' fields.

  Keys every source has (E2E: the name) are always present; the number of other keys is drawn
  uniformly between the fewest and the most the sources have, the keys uniformly among those, and
  each key's value from its occurrences in the sources (so values keep their frequencies). Keys
  keep the sources' order. No output says what a given source, a source in ``exclude`` (held-out
  MRs: dev and test) or another output says, in any field order (``mr.canonical``).
  """
  out = []
  for text in _new_combinations(sources, seed, max_tries=100 * num + 1000, exclude=exclude):
    out.append(text)
    if len(out) == num:
      return out
  raise UserError(f"only {len(out)} of {num} new combinations found; ask for fewer")


def _new_combinations(sources: list[str], seed: int, max_tries: int, exclude=()):
  """``recombine_sources``' draws, one at a time, until ``max_tries`` draws have been made."""
  parsed = [mr.strict_fields(s) for s in sources]
  bad = [s for s, p in zip(sources, parsed) if p is None]
  if bad:
    raise UserError(f"recombining needs sources of 'key : value' fields joined by ' | '; "
                    f"{len(bad)} of {len(sources)} are not, e.g. {bad[0]!r}")
  position = collections.defaultdict(list)
  values = collections.defaultdict(list)
  for fields in parsed:
    for i, (k, v) in enumerate(fields):
      position[k].append(i)
      values[k].append(v)
  order = sorted(position, key=lambda k: (sum(position[k]) / len(position[k]), k))
  required = [k for k in order if len(values[k]) == len(parsed)]
  optional = [k for k in order if k not in required]
  counts = [len(f) - len(required) for f in parsed]
  lo, hi = min(counts), max(counts)
  rng = random.Random(seed)
  seen = {mr.canonical(s) for s in [*sources, *exclude]}
  for _ in range(max_tries):
    keys = set(rng.sample(optional, rng.randint(lo, hi)))
    text = mr.join((k, rng.choice(values[k])) for k in order if k in keys or k in required)
    if mr.canonical(text) not in seen:
      seen.add(mr.canonical(text))
      yield text


def skeleton(source: str, ignore=()) -> tuple:
  """A structured source's fields with the values of the keys in ``ignore`` left out (the keys
  stay): two sources with one skeleton differ only in those values (E2E: the name, near and food
  values that ``data.delex`` copies from the source)."""
  fields = mr.strict_fields(source)
  if fields is None:
    raise UserError(f"not a source of 'key : value' fields joined by ' | ': {source!r}")
  return tuple(sorted((k, None if k in ignore else v) for k, v in fields))


def heldout_sources(sources: list[str], num: int, seed: int, ignore=(), exclude=()) -> list[str]:
  """``num`` new combinations of the sources' fields (``recombine_sources``) whose skeleton (with
  the values of ``ignore`` left out) is none of ``sources``': inputs a model trained on
  ``sources`` has never seen in any form but those values. E2E's test set is of that kind (with
  name, near and food left out, none of its 630 MRs has a train MR's skeleton); 82% of its dev
  set's 547 MRs are not."""
  seen = {skeleton(s, ignore) for s in sources}
  out, taken = [], set()
  for candidate in _new_combinations(sources, seed, max_tries=1000 * num + 10_000,
                                     exclude=exclude):
    key = skeleton(candidate, ignore)
    if key not in seen and key not in taken:
      taken.add(key)
      out.append(candidate)
      if len(out) == num:
        return out
  raise UserError(f"only {len(out)} of {num} held-out combinations found; ask for fewer")


def mentions_values(source: str, text: str, keys) -> bool:
  """Whether ``text`` holds, case-insensitively and verbatim, the value of each of ``keys`` that
  the structured ``source`` gives."""
  low = text.lower()
  return all(v.lower() in low for k, v in mr.strict_fields(source) or () if k in keys)


def teacher_outputs(teacher: Run, sources: list[str], *, sampler: str, steps: int,
                    batch_size: int = 256, chunk: int = 1024, eta: float = 0.0,
                    seed: int = 0, nbest: bool = False) -> list:
  """The teacher's decode of each source (``sampler="sample"``: drawn at temperature ``eta``; the
  chunk from source ``start`` on is seeded ``seed + start``); with ``nbest``, each source's list of
  ``steps`` beams, best first (``Run.generate_nbest``). Sources are decoded in order of token
  length, so each batch's position loop starts and stops together (``ar._positions_loop``); the
  result is in the given order. Progress is logged every ``chunk`` sources."""
  lengths = [len(teacher.tokenizer.encode(s)) for s in sources]
  order = np.argsort(lengths, kind="stable")
  out = [None] * len(sources)
  t0 = time.time()
  for start in range(0, len(order), chunk):
    idx = order[start:start + chunk]
    srcs = [sources[i] for i in idx]
    texts = (teacher.generate_nbest(srcs, steps, batch_size=batch_size) if nbest else
             teacher.generate(sources=srcs, sampler=sampler, steps=steps, batch_size=batch_size,
                              eta=eta, seed=seed + start))
    for i, t in zip(idx, texts):
      out[i] = t
    done = min(start + chunk, len(order))
    secs = time.time() - t0
    logging.info("distill: %d/%d sources  %.0fs  eta %.0fs", done, len(order), secs,
                 secs / done * (len(order) - done))
  return out


def candidate_outputs(teacher: Run, sources: list[str], num: int, *, sampler: str, steps: int,
                      batch_size: int, eta: float, seed: int, candidate_eta: float) -> list[str]:
  """``teacher_outputs`` (the sampler's decode), then with ``num`` > 1 the first of ``num``
  candidates with the fewest slot errors (``e2e.rerank``). The candidates are, for
  ``sampler="beam"``, the ``num`` best of the ``steps`` beams (TGen's slot-coverage rerank of its beam); otherwise the
  decode and ``num - 1`` samples at temperature ``candidate_eta`` (candidate k seeded
  ``seed + k * len(sources)``). Either way the decode is kept where it is already faithful."""
  if num > 1 and sampler == "beam":
    if num > steps:
      raise UserError(f"slot_candidates={num} beams of a beam of {steps}: use --steps >= {num}")
    beams = teacher_outputs(teacher, sources, sampler=sampler, steps=steps,
                            batch_size=batch_size, nbest=True)
    return e2e.rerank(sources, [b[:num] for b in beams])
  first = teacher_outputs(teacher, sources, sampler=sampler, steps=steps, batch_size=batch_size,
                          eta=eta, seed=seed)
  if num == 1:
    return first
  more = [teacher_outputs(teacher, sources, sampler="sample", steps=1, batch_size=batch_size,
                          eta=candidate_eta, seed=seed + k * len(sources)) for k in range(1, num)]
  return e2e.rerank(sources, [list(c) for c in zip(first, *more)])


def distill_dataset(teacher: Run, out_dir: str, *, sampler: str = "greedy", steps: int = 1,
                    batch_size: int = 256, limit: int = 0, recombine: int = 0,
                    seed: int = 0, require_values=(), heldout: int = 0,
                    heldout_ignore=(), eta: float = 0.0, require_faithful: bool = False,
                    slot_candidates: int = 1, candidate_eta: float = 0.8) -> dict:
  """Writes ``out_dir/{train,valid,test}.jsonl`` and ``distill.json``; returns the latter.

  ``sampler="sample"`` draws each output at softmax temperature ``eta`` (seeded by ``seed``).
  ``limit`` (0 = all) keeps the first N distinct train sources (tests, quick looks);
  ``recombine`` adds that many new combinations of their fields (``recombine_sources``, drawn with
  ``seed``) to what the teacher decodes; ``slot_candidates`` > 1 keeps, per source, the least
  slot-erroneous of the decode and ``slot_candidates - 1`` samples at ``candidate_eta``, or with
  ``sampler="beam"`` of the ``slot_candidates`` best beams (``candidate_outputs``; held-out
  sources too, so ``heldout.jsonl`` holds the same kind of text as the train pairs); with
  ``require_faithful``, an output (of a train or recombined source) is kept only if it has no slot
  error (``data.e2e.check``: every field said once, nothing added); with ``require_values``, a
  recombined source is kept only if the teacher's output mentions the values of those keys
  (``mentions_values``). ``heldout`` draws that many combinations none of the train or recombined
  sources has the skeleton of (``heldout_sources`` with ``heldout_ignore``, seed ``seed + 1``) and
  writes them with the teacher's outputs (filtered the same way) as ``heldout.jsonl``: a selection
  set for generalisation to unseen combinations, scored with ``evaluate --inputs``. The directory
  is written under a temporary name and renamed at the end, so it is never half-written.
  """
  if teacher.config.model.family != "ar" or not teacher.is_seq2seq:
    raise UserError(f"{teacher.workdir} is not a seq2seq AR run (model.family=ar, "
                    "data.task=seq2seq); distillation needs one as the teacher")
  if os.path.exists(out_dir):
    raise UserError(f"{out_dir} exists; choose a new --out (distilled data is never overwritten)")
  t0 = time.time()
  data = pipeline.prepare_sources(teacher.config.data)
  groups = evaluate.grouped_references(data["train"], limit or None)
  sources = [src for src, _ in groups]
  num_train = len(sources)
  # no new combination may be a dev or test MR: the teacher would write the student's exam
  evaluation = [pipeline._text(data[s][i]["src"]) for s in ("validation", "test") if s in data
                for i in range(len(data[s]))]
  if recombine:
    sources += recombine_sources(sources, recombine, seed, exclude=evaluation)
  held = (heldout_sources(sources, heldout, seed + 1, heldout_ignore, exclude=evaluation)
          if heldout else [])
  if slot_candidates > 1 and not e2e.is_e2e(sources + held):  # before hours of decoding
    raise UserError("slot_candidates reranks by E2E slot errors; these sources are not E2E MRs")
  outputs = candidate_outputs(teacher, sources + held, slot_candidates, sampler=sampler,
                              steps=steps, batch_size=batch_size, eta=eta, seed=seed,
                              candidate_eta=candidate_eta)
  empty = sum(not o.strip() for o in outputs)
  keep = [bool(o.strip()) and (i < num_train or mentions_values(s, o, require_values))
          for i, (s, o) in enumerate(zip(sources + held, outputs))]
  unfaithful = 0
  if require_faithful:
    faithful = [all(v == "ok" for v in e2e.check(s, o).values())
                for s, o in zip(sources + held, outputs)]
    unfaithful = sum(k and not f for k, f in zip(keep, faithful))
    keep = [k and f for k, f in zip(keep, faithful)]
  pairs = list(zip(sources + held, outputs, keep))
  rows = {"train": [(s, o) for s, o, k in pairs[:len(sources)] if k]}
  if heldout:
    rows[HELDOUT_SPLIT] = [(s, o) for s, o, k in pairs[len(sources):] if k]
  for split in ("validation", "test"):
    src = data[split]
    rows[split] = [(pipeline._text(src[i]["src"]), pipeline._text(src[i]["tgt"]))
                   for i in range(len(src))]
  info = {"teacher": os.path.abspath(teacher.workdir), "teacher_step": teacher.step,
          "teacher_dataset": teacher.config.data.dataset, "sampler": sampler, "steps": steps,
          "eta": eta,
          "train_sources": num_train, "recombined_sources": recombine,
          "excluded_evaluation_mrs": len({mr.canonical(s) for s in evaluation}),
          "seed": seed, "empty_outputs_dropped": empty, "require_values": list(require_values),
          "require_faithful": require_faithful, "unfaithful_dropped": unfaithful,
          "slot_candidates": slot_candidates,
          "candidate_eta": (candidate_eta if slot_candidates > 1 and sampler != "beam"
                            else None),
          # the teacher's texts for the train MRs, before any filter (E2E only)
          **({"train_slot_error_rate": e2e.score(
              [{"src": s, "hyp": o} for s, o in zip(sources[:num_train], outputs)])[
                  "slot_error_rate"]} if e2e.is_e2e(sources[:num_train]) else {}),
          "recombined_kept": sum(k for _, _, k in pairs[num_train:len(sources)]),
          "heldout_sources": heldout, "heldout_ignore": list(heldout_ignore),
          "pairs": {split: len(r) for split, r in rows.items()},
          "seconds": round(time.time() - t0, 1)}
  write_dataset(out_dir, rows, info)
  return info


def write_dataset(out_dir: str, rows: dict, info: dict) -> None:
  """``out_dir/{train,valid,test}.jsonl`` (and ``heldout.jsonl`` when ``rows`` has it) of ``{"src",
  "trg"}`` lines from ``rows`` (split -> (source, target) pairs), and ``info`` as ``distill.json``;
  written under a temporary name and renamed, so the directory is never half-written."""
  tmp = out_dir.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for split, name in {**SPLIT_FILES, HELDOUT_SPLIT: HELDOUT_FILE}.items():
    if split in rows:
      with open(os.path.join(tmp, name), "w") as f:
        f.writelines(json.dumps({"src": s, "trg": t}) + "\n" for s, t in rows[split])
  with open(os.path.join(tmp, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)
  os.replace(tmp, out_dir)


def faithful_references(data_cfg, out_dir: str) -> dict:
  """Writes a ``jsonl:`` dataset of ``data_cfg``'s real references whose train split keeps only the
  texts without a slot error (``data.e2e.check``: every field said once, nothing added); dev and
  test keep every reference, so evaluation is against the data as published. A teacher trained on
  it learns from texts that say their MR (the E2E cleaning work's point, Dusek et al. 2019).
  Returns the counts written to ``distill.json``."""
  if os.path.exists(out_dir):
    raise UserError(f"{out_dir} exists; choose a new --out (data is never overwritten)")
  t0 = time.time()
  data = pipeline.prepare_sources(data_cfg)
  rows = {split: [(pipeline._text(data[split][i]["src"]), pipeline._text(data[split][i]["tgt"]))
                  for i in range(len(data[split]))] for split in SPLIT_FILES if split in data}
  if not e2e.is_e2e([s for s, _ in rows["train"]]):
    raise UserError(f"{data_cfg.dataset}: the sources are not E2E MRs; slot errors need them")
  train = rows["train"]
  rows["train"] = [(s, t) for s, t in train if all(v == "ok" for v in e2e.check(s, t).values())]
  info = {"references_of": data_cfg.dataset, "require_faithful": True,
          "train_references": len(train), "unfaithful_dropped": len(train) - len(rows["train"]),
          "train_mrs": len({s for s, _ in train}),
          "train_mrs_kept": len({s for s, _ in rows["train"]}),
          "pairs": {split: len(r) for split, r in rows.items()},
          "seconds": round(time.time() - t0, 1)}
  write_dataset(out_dir, rows, info)
  return info
