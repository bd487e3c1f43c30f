r"""Decoding speed beside quality: a seq2seq diffusion run (the student) at several samplers and step
counts, and its AR teacher greedy and with beam 4, on the same inputs, batch and machine.

    python -m experiments.decode_bench --student runs/e2e_diffuseq_cpu --teacher runs/ar_delex \
        --out runs/decode_bench                     # E2E dev, all 547 MRs, batch 64

Writes ``<out>/decode_bench.json`` (one row per setting: ``family``, ``sampler``, ``steps``,
``clamp``, ``dials`` (the run's sampling dials it overrides), ``bleu``, ``sentences_per_s``,
``latency_s`` at batch 1, ``compile_s``, ``peak_rss_bytes``, the sampling settings) and each row's texts as ``<out>/<row>.jsonl``; prints the
table (docs/performance.md). Each row runs in its own process, so its peak memory is its own.
"""
import json
import os
import subprocess
import sys

from absl import flags

from diffusion_text import decode_bench, runs
from experiments import common

_STUDENT = flags.DEFINE_string("student", None, "Seq2seq diffusion run directory.")
_TEACHER = flags.DEFINE_string("teacher", None, "Seq2seq AR run directory (optional).")
_SPLIT = flags.DEFINE_string("split", "validation", "Split of the student's dataset.")
_NUM_INPUTS = flags.DEFINE_integer("num_inputs", 0, "Distinct inputs (0 = all).", lower_bound=0)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences per call.", lower_bound=1)
_QUICK = flags.DEFINE_bool("quick", False, "Two diffusion rows only (the smoke test).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed decodes of all inputs per row (the median is "
                                "kept).", lower_bound=1)
_ROWS = flags.DEFINE_list("rows", [], "Only these rows, by the names of their texts files "
                          "(e.g. ar_greedy,diffusion_dpm++2m1); default all.")
_OUT = flags.DEFINE_string("out", "runs/decode_bench", "Output directory.")
_ROW = flags.DEFINE_string("row", "", "Internal: measure one row (JSON) and print it.")


def _check_run(flag: str, workdir: str, family: str) -> None:
  if not os.path.isfile(os.path.join(workdir, runs.CONFIG_FILE)):
    raise common.UserError(f"--{flag} {workdir}: not a run directory (no {runs.CONFIG_FILE})")
  c = runs.load_config(workdir)
  if c.model.family != family or c.data.task != "seq2seq":
    raise common.UserError(f"--{flag} {workdir}: a seq2seq {family} run is needed, this is a "
                           f"{c.data.task} {c.model.family} run")


def _measure(args: dict) -> dict:
  """One row, in a fresh process; its last stdout line is the row's JSON."""
  cmd = [sys.executable, "-m", "experiments.decode_bench", "--row", json.dumps(args)]
  res = subprocess.run(cmd, capture_output=True, text=True)
  if res.returncode != 0:
    raise common.UserError(f"row {args}: {res.stderr.strip().splitlines()[-1:]}")
  return json.loads(res.stdout.strip().splitlines()[-1])


def _chosen(plan: list, names: list) -> list:
  """The rows of ``plan`` named in ``names`` (all when empty); an unknown name is an error."""
  if not names:
    return plan
  named = {decode_bench.row_name(runs.load_config(w).model.family, *r): (w, r) for w, r in plan}
  unknown = [n for n in names if n not in named]
  if unknown:
    raise common.UserError(f"--rows: no row named {', '.join(unknown)}; rows: {', '.join(named)}")
  return [named[n] for n in names]


def run():
  if _ROW.value:
    print(json.dumps(decode_bench.measure_row(**json.loads(_ROW.value))))
    return
  if not _STUDENT.value:
    raise common.UserError("--student is required")
  _check_run("student", _STUDENT.value, "diffusion")
  student = runs.load_config(_STUDENT.value)
  rows = decode_bench.rows_for("diffusion", _QUICK.value, student.model.x0_head == "softmax",
                               len(student.sample.get("grid", [])) - 1)
  plan = [(_STUDENT.value, r) for r in rows]
  if _TEACHER.value:
    _check_run("teacher", _TEACHER.value, "ar")
    plan = [(_TEACHER.value, r) for r in decode_bench.rows_for("ar", _QUICK.value)] + plan
  plan = _chosen(plan, _ROWS.value)
  common.check_out("--out", os.path.join(_OUT.value, "decode_bench.json"))
  rows = []
  for k, (workdir, (sampler, steps, clamp, dials)) in enumerate(plan, 1):
    row = _measure({"workdir": workdir, "sampler": sampler, "steps": steps, "clamp": clamp,
                    "dials": dials, "split": _SPLIT.value, "num_inputs": _NUM_INPUTS.value,
                    "batch_size": _BATCH.value, "repeats": _REPEATS.value})
    name = decode_bench.row_name(row["family"], sampler, steps, clamp, dials)
    print(f"[{k}/{len(plan)}] {name}: "
          f"BLEU {row['bleu']:.1f}, {row['sentences_per_s']:.1f} sentences/s", flush=True)
    rows.append(row)
  os.makedirs(_OUT.value, exist_ok=True)
  for row in rows:
    name = decode_bench.row_name(row["family"], row["sampler"], row["steps"], row["clamp"],
                                 row["dials"])
    row["texts"] = name + ".jsonl"
    common.write_atomic(os.path.join(_OUT.value, row["texts"]),
                        "".join(json.dumps(o) + "\n" for o in row.pop("outputs")))
  result = {"student": os.path.abspath(_STUDENT.value),
            "teacher": os.path.abspath(_TEACHER.value) if _TEACHER.value else None,
            "split": _SPLIT.value, "batch_size": _BATCH.value, "rows": rows}
  common.write_atomic(os.path.join(_OUT.value, "decode_bench.json"), json.dumps(result, indent=2))
  print(decode_bench.table(rows))


if __name__ == "__main__":
  common.run_app(run)
