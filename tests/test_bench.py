"""Smoke test of the benchmark harness at toy sizes: it runs end to end and writes sane JSON."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_quick_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  r = subprocess.run([sys.executable, "-m", "experiments.bench", "--quick", "--output", str(out)],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res["complete"] and res["matmul_peak_gflops"] > 0 and res["environment"]["versions"]["jax"]
  pipe = res["pipeline"]
  assert all(pipe[k][e] > 0 for k in ("uncached", "cached")
             for e in ("first_epoch_seq_per_s", "second_epoch_seq_per_s"))
  (train,) = res["train"]
  assert train["self_cond"] and train["loss_finite"] and train["step_s_min"] > 0
  assert train["model_flops"] > 0 and train["xla_flops"] > 0 and 0 < train["mfu"]
  prof = res["profile"]  # exclusive op times: nested spans are not counted twice
  assert prof["by_kind_ms"]["matmul"] > 0 and prof["top_ops"]
  assert 0 < prof["threads_busy"] <= os.cpu_count() + 0.5
  assert not any(o["op"].startswith(("end: ", "ThreadpoolListener")) or "Execute" in o["op"]
                 for o in prof["top_ops"])
  assert {r["sampler"] for r in res["sample"]} == {"ddpm", "dpm++2m"}
  assert all(r["step_s"] > 0 and r["forward_s"] > 0 for r in res["sample"])
  assert [r["devices"] for r in res["mesh_scaling"]] == [1, 2]
  mem = res["memory_per_device"]
  assert mem["devices"] == 8
  assert mem["fsdp"]["bytes_per_device"] < mem["data_parallel"]["bytes_per_device"]
  assert mem["fsdp"]["bytes_total"] == mem["data_parallel"]["bytes_total"]
  assert "matmul peak" in r.stdout and "wrote" in r.stdout


def test_source_cache_part_decodes_the_same_ids_as_the_encoder_at_every_step():
  """The recipe's encoder-decoder, source encoded once per batch by ``decoding.decode_ids``: the
  same words as running the encoder at every sampler step."""
  from diffusion_text import bench
  rows = bench.part_source_cache(batch=2, steps=[3])["rows"]
  assert [r["steps"] for r in rows] == [3] and rows[0]["same_ids"] == 1.0
  assert rows[0]["encoded_once_s"] > 0 and rows[0]["source_positions"] == 46
