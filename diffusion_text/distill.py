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
from diffusion_text.data import pipeline
from diffusion_text.errors import UserError
from diffusion_text.generate import Run

SPLIT_FILES = {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"}
INFO_FILE = "distill.json"


FIELD_SEP, KEY_SEP = " | ", " : "


def parse_fields(source: str):
  """[(key, value)] of a structured source, or None when any field lacks ``KEY_SEP``."""
  fields = [f.split(KEY_SEP, 1) for f in source.split(FIELD_SEP)]
  if any(len(f) != 2 or not f[0].strip() or not f[1].strip() for f in fields):
    return None
  return [(k.strip(), v.strip()) for k, v in fields]


def recombine_sources(sources: list[str], num: int, seed: int = 0) -> list[str]:
  """``num`` new structured sources, each a new combination of the given sources' fields.

  Keys every source has (E2E: the name) are always present; the number of other keys is drawn
  uniformly between the fewest and the most the sources have, the keys uniformly among those, and
  each key's value from its occurrences in the sources (so values keep their frequencies). Keys
  keep the sources' order. No output repeats a given source or another output.
  """
  parsed = [parse_fields(s) for s in sources]
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
  seen, out = set(sources), []
  tries = 0
  while len(out) < num:
    tries += 1
    if tries > 100 * num + 1000:
      raise UserError(f"only {len(out)} of {num} new combinations found; ask for fewer")
    keys = set(rng.sample(optional, rng.randint(lo, hi)))
    text = FIELD_SEP.join(f"{k}{KEY_SEP}{rng.choice(values[k])}" for k in order
                          if k in keys or k in required)
    if text not in seen:
      seen.add(text)
      out.append(text)
  return out


def teacher_outputs(teacher: Run, sources: list[str], *, sampler: str, steps: int,
                    batch_size: int = 256, chunk: int = 1024) -> list[str]:
  """The teacher's decode of each source. Sources are decoded in order of token length, so each
  batch's position loop starts and stops together (``ar._positions_loop``); the result is in the
  given order. Progress is logged every ``chunk`` sources."""
  lengths = [len(teacher.tokenizer.encode(s)) for s in sources]
  order = np.argsort(lengths, kind="stable")
  out = [None] * len(sources)
  t0 = time.time()
  for start in range(0, len(order), chunk):
    idx = order[start:start + chunk]
    texts = teacher.generate(sources=[sources[i] for i in idx], sampler=sampler, steps=steps,
                             batch_size=batch_size)
    for i, t in zip(idx, texts):
      out[i] = t
    done = min(start + chunk, len(order))
    secs = time.time() - t0
    logging.info("distill: %d/%d sources  %.0fs  eta %.0fs", done, len(order), secs,
                 secs / done * (len(order) - done))
  return out


def distill_dataset(teacher: Run, out_dir: str, *, sampler: str = "greedy", steps: int = 1,
                    batch_size: int = 256, limit: int = 0, recombine: int = 0,
                    seed: int = 0) -> dict:
  """Writes ``out_dir/{train,valid,test}.jsonl`` and ``distill.json``; returns the latter.

  ``limit`` (0 = all) keeps the first N distinct train sources (tests, quick looks);
  ``recombine`` adds that many new combinations of their fields (``recombine_sources``, drawn with
  ``seed``) to what the teacher decodes. The directory is written under a temporary name and
  renamed at the end, so it is never half-written.
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
  if recombine:
    sources += recombine_sources(sources, recombine, seed)
  outputs = teacher_outputs(teacher, sources, sampler=sampler, steps=steps, batch_size=batch_size)
  empty = sum(not o.strip() for o in outputs)
  rows = {"train": [(s, o) for s, o in zip(sources, outputs) if o.strip()]}
  for split in ("validation", "test"):
    src = data[split]
    rows[split] = [(pipeline._text(src[i]["src"]), pipeline._text(src[i]["tgt"]))
                   for i in range(len(src))]
  info = {"teacher": os.path.abspath(teacher.workdir), "teacher_step": teacher.step,
          "teacher_dataset": teacher.config.data.dataset, "sampler": sampler, "steps": steps,
          "train_sources": len(sources) - recombine, "recombined_sources": recombine,
          "seed": seed, "empty_outputs_dropped": empty,
          "pairs": {split: len(r) for split, r in rows.items()},
          "seconds": round(time.time() - t0, 1)}
  tmp = out_dir.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for split, name in SPLIT_FILES.items():
    with open(os.path.join(tmp, name), "w") as f:
      f.writelines(json.dumps({"src": s, "trg": t}) + "\n" for s, t in rows[split])
  with open(os.path.join(tmp, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)
  os.replace(tmp, out_dir)
  return info
