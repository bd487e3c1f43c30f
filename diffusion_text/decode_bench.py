"""Decoding speed beside quality: a seq2seq diffusion run at several samplers and step counts and an
AR run (its teacher), on the same inputs, batch and machine (``experiments.decode_bench``).

Each row is measured in a fresh process (``measure_row``), so that its peak memory is its own:
compile time (the first call on a batch minus a second identical one), throughput over every input
(``sentences_per_s``, compiled), the latency of one sentence at batch 1 (median of repeats,
compiled), BLEU of the outputs against all references, and the process's peak resident memory.
"""
import resource
import statistics
import time
from typing import Optional

from diffusion_text import evaluate, generate, metrics, runs
from diffusion_text.data import pipeline

# (sampler, steps, clamp, dials): the few-step end and the test setting of a diffusion run; dials
# override the run's ``sample.<dial>`` (``decoding.DIALS``). One step read by the nearest embedding
# makes one denoiser call; at a low logit temperature that embedding is the head's top word.
NEAREST = {"rounding": "nearest"}
NEAREST_SHARP = {"rounding": "nearest", "logit_temp": 0.1}
DIFFUSION_ROWS = ([(s, n, c, {}) for s in ("dpm++2m", "ddim") for n in (1, 2, 4, 8, 20)
                   for c in (False, True)] + [("ddpm", 200, True, {})]
                  + [("dpm++2m", 1, False, NEAREST), ("dpm++2m", 1, False, NEAREST_SHARP)])
AR_ROWS = [("greedy", None, False, {}), ("beam", 4, False, {})]  # beam: steps is the beam size
QUICK_DIFFUSION_ROWS = [("dpm++2m", 1, False, NEAREST), ("dpm++2m", 2, True, {})]


def row_name(family: str, sampler: str, steps: Optional[int], clamp: bool,
             dials: Optional[dict] = None) -> str:
  return (f"{family}_{sampler}" + (f"{steps}" if steps else "") + ("_clamp" if clamp else "")
          + "".join(f"_{k}{v:g}" if isinstance(v, float) else f"_{k}-{v}"
                    for k, v in sorted((dials or {}).items())))


def inputs(workdir: str, split: str, num_inputs: int) -> tuple[list[str], list[list[str]]]:
  """(distinct sources, their references) of ``split`` of the run's dataset."""
  data = pipeline.prepare_sources(runs.load_config(workdir).data)
  if split not in data:
    raise ValueError(f"split {split!r} not in the dataset of {workdir}; have {sorted(data)}")
  groups = evaluate.grouped_references(data[split], num_inputs or None)
  return [g[0] for g in groups], [g[1] for g in groups]


def _seconds(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def measure_row(workdir: str, sampler: str, steps: Optional[int], clamp: bool, *, split: str,
                num_inputs: int, batch_size: int, dials: Optional[dict] = None,
                latency_repeats: int = 3, repeats: int = 3) -> dict:
  """One row: decode ``split``'s inputs with ``workdir``'s run, its ``sample.<dial>`` replaced by
  ``dials``; returns the row with its texts (``outputs``: src, hyp). The decode of all inputs is
  timed ``repeats`` times (the same texts each time) and the median kept: a row of about a second
  otherwise carries the machine's noise."""
  run = generate.load_run(workdir)
  with run.config.unlocked():
    run.config.sample.update(dials or {})
  srcs, refs = inputs(workdir, split, num_inputs)
  family = run.config.model.family
  kw = {"sampler": sampler, "steps": steps, "batch_size": batch_size}
  if family == "diffusion":
    kw["clamp"] = clamp
  first = srcs[:batch_size]
  compile_s = max(_seconds(lambda: run.generate(sources=first, **kw))
                  - _seconds(lambda: run.generate(sources=first, **kw)), 0.0)
  texts = []
  times = [_seconds(lambda: texts.extend(run.generate(sources=srcs, **kw)))]
  times += [_seconds(lambda: run.generate(sources=srcs, **kw)) for _ in range(repeats - 1)]
  decode_s = statistics.median(times)
  one = {**kw, "batch_size": 1}
  run.generate(sources=srcs[:1], **one)  # compiles the batch-1 shape
  latency = statistics.median(_seconds(lambda: run.generate(sources=srcs[:1], **one))
                              for _ in range(latency_repeats))
  settings = evaluate.sampling_settings(run, kw)
  return {
      "family": family, "sampler": sampler, "steps": steps,
      "clamp": bool(clamp) if family == "diffusion" else None, "dials": dict(dials or {}),
      "bleu": metrics.bleu(texts, refs)["bleu"], "sentences_per_s": len(srcs) / decode_s,
      "decode_s": decode_s, "decode_s_each": times, "compile_s": compile_s, "latency_s": latency,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "num_inputs": len(srcs), "split": split, "checkpoint_step": run.step,
      "collapse": bool(run.config.sample.collapse_repeats), "settings": settings,
      "outputs": [{"src": s, "hyp": h, "refs": r} for s, h, r in zip(srcs, texts, refs)],
  }


def rows_for(family: str, quick: bool, softmax_head: bool = True, own_steps: int = -1) -> list:
  """The rows of a run: the AR rows, or the diffusion rows (those with a logit temperature only
  for a softmax x0 head); a step-distilled student (``own_steps`` > 0, the steps of its own grid)
  is measured on that grid alone, with DDIM and DPM-Solver++."""
  if family == "ar":
    return AR_ROWS
  if own_steps > 0:
    return [("ddim", own_steps, False, {}), ("dpm++2m", own_steps, False, {})]
  rows = QUICK_DIFFUSION_ROWS if quick else DIFFUSION_ROWS
  return [r for r in rows if softmax_head or "logit_temp" not in r[3]]


def table(rows: list[dict]) -> str:
  """A markdown table of the rows, with each row's speed relative to the AR greedy row's."""
  greedy = next((r for r in rows if r["family"] == "ar" and r["sampler"] == "greedy"), None)
  out = ["| family | sampler | steps | clamp | dials | BLEU | sentences/s | x AR greedy "
         "| latency (batch 1) | compile | peak memory |", "| --- " * 11 + "|"]
  for r in rows:
    ratio = f"{r['sentences_per_s'] / greedy['sentences_per_s']:.2f}" if greedy else "-"
    out.append(f"| {r['family']} | {r['sampler']} | {r['steps'] or '-'} | "
               f"{'-' if r['clamp'] is None else ('yes' if r['clamp'] else 'no')} | "
               f"{', '.join(f'{k} {v}' for k, v in sorted(r.get('dials', {}).items())) or '-'} | "
               f"{r['bleu']:.1f} | {r['sentences_per_s']:.1f} | {ratio} | "
               f"{r['latency_s'] * 1000:.0f} ms | {r['compile_s']:.1f} s | "
               f"{r['peak_rss_bytes'] / 2**20:.0f} MiB |")
  return "\n".join(out)
