r"""Benchmarks: matmul peak, train step (and its profile), sampler, mesh scaling, memory per device;
JSON and a table. The measurements are ``diffusion_text.bench``; this is its command line.

    python -m experiments.bench --output runs/bench.json          # full run (make bench)
    python -m experiments.bench --quick --output /tmp/bench.json   # toy sizes: the smoke test

Every measurement runs in its own subprocess (``--part``), so that peak RSS is per configuration and
the device count (``XLA_FLAGS=--xla_force_host_platform_device_count``) can differ between parts.
"""
import json
import os

from absl import flags

from diffusion_text import bench
from experiments import common

_OUTPUT = flags.DEFINE_string("output", "runs/bench.json", "Where the JSON goes.")
_QUICK = flags.DEFINE_bool("quick", False, "Toy sizes and few repeats (the smoke test).")
_PART = flags.DEFINE_string("part", "", "Internal: run one measurement and print its JSON.")
_ARGS = flags.DEFINE_string("args", "{}", "Internal: JSON arguments of --part.")
_FULL_TRAJ = flags.DEFINE_bool(
    "full_trajectory", False,
    "Also time a full T-step trajectory (about 15 min per sampler and batch for `small` on 2 "
    "cores); otherwise it is estimated as T x the measured per-step time.")


def _part_pipeline(quick: bool) -> dict:
  """``bench.part_pipeline`` on the data config of ``configs/e2e_diffuseq.py:cpu_nosc`` with the
  target at a fixed position (no copied slot values), so the pipeline numbers stay comparable
  with docs/performance.md."""
  from configs import e2e_diffuseq
  data = e2e_diffuseq.get_config("cpu_nosc").data
  data.target_start = "fixed"
  return bench.part_pipeline(quick, data)


PARTS = {**bench.PARTS, "pipeline": _part_pipeline}


def run():
  if _PART.value:
    print(json.dumps(PARTS[_PART.value](**json.loads(_ARGS.value))))
    return
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  result = bench.run_all(_QUICK.value,
                         save=lambda r: common.write_atomic(_OUTPUT.value, json.dumps(r, indent=2)),
                         full_trajectory=_FULL_TRAJ.value)
  print(bench.table(result))
  print(f"[bench] wrote {_OUTPUT.value}")


if __name__ == "__main__":
  common.run_app(run)
