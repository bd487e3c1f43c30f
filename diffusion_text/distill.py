"""Sequence-level knowledge distillation (Kim & Rush 2016): an AR teacher's outputs as training data.

E2E has about 8.7 references per meaning representation; at high noise a non-autoregressive
denoiser sees their per-position mixture. Training it on one deterministic output per source (the
teacher's greedy or beam decode) removes that ambiguity (Gu et al. 2018; used by Difformer,
DiNoiSer and DiffuSeq-v2).

``distill_dataset`` writes DiffuSeq JSON Lines that ``data.dataset = "jsonl:NAME"`` reads:
``train.jsonl`` holds one teacher output per distinct train source; ``valid.jsonl`` and
``test.jsonl`` hold the real references (every pair), so evaluation is against the data, never
against the teacher.
"""
import json
import os
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
                    batch_size: int = 256, limit: int = 0) -> dict:
  """Writes ``out_dir/{train,valid,test}.jsonl`` and ``distill.json``; returns the latter.

  ``limit`` (0 = all) keeps the first N distinct train sources (tests, quick looks). The directory
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
  outputs = teacher_outputs(teacher, sources, sampler=sampler, steps=steps, batch_size=batch_size)
  empty = sum(not o.strip() for o in outputs)
  rows = {"train": [(s, o) for s, o in zip(sources, outputs) if o.strip()]}
  for split in ("validation", "test"):
    src = data[split]
    rows[split] = [(pipeline._text(src[i]["src"]), pipeline._text(src[i]["tgt"]))
                   for i in range(len(src))]
  info = {"teacher": os.path.abspath(teacher.workdir), "teacher_step": teacher.step,
          "teacher_dataset": teacher.config.data.dataset, "sampler": sampler, "steps": steps,
          "train_sources": len(sources), "empty_outputs_dropped": empty,
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
