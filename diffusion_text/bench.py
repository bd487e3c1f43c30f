"""The benchmark's measurements: matmul peak, train step (and its profile), sampler, AR decoding,
input pipeline, memory per device (``PARTS``); ``run_all`` runs each part in a fresh subprocess of
the command line ``experiments/bench.py`` and ``table`` formats the result.

Timings are reported, never asserted. FLOPs are counted two ways: XLA's cost analysis of the
compiled step, and a formula that counts only the matmuls the objective needs (``model_flops``);
MFU uses the formula against the measured dense float32 matmul peak of this machine.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# Named model/data sizes. `small` is the reference point measured with DiffuSeq's PyTorch code on
# this machine (README "Performance"); `e2e_cpu` and `e2e_paper` are configs/e2e_diffusion_lm.py.
# CPU-sized models unroll their blocks (faster backward on CPU); deep ones scan (compile time).
SIZES = {
    "tiny": dict(num_layers=2, width=32, num_heads=2, mlp_dim=64, emb_dim=8, max_len=16, batch=8,
                 vocab=100, T=100, scan_layers=True),
    "small": dict(num_layers=4, width=256, num_heads=4, mlp_dim=1024, emb_dim=128, max_len=64,
                  batch=64, vocab=8000, T=2000, scan_layers=False),
    "e2e_cpu": dict(num_layers=4, width=128, num_heads=4, mlp_dim=512, emb_dim=16, max_len=64,
                    batch=64, vocab=855, T=2000, scan_layers=False),
    "e2e_paper": dict(num_layers=12, width=768, num_heads=12, mlp_dim=3072, emb_dim=16, max_len=64,
                      batch=64, vocab=855, T=2000, scan_layers=True),
}


def _config(size: dict, self_cond: bool = False, mesh: dict | None = None):
  """The base config (``diffusion_text.defaults``) with the model, data and mesh of ``size``."""
  from diffusion_text import defaults
  c = defaults.get_config()
  c.model.update(num_layers=size["num_layers"], width=size["width"], num_heads=size["num_heads"],
                 mlp_dim=size["mlp_dim"], emb_dim=size["emb_dim"], self_cond=self_cond,
                 scan_layers=size["scan_layers"])
  c.data.max_len = size["max_len"]
  c.train.batch_size = size["batch"]
  c.diffusion.num_steps = size["T"]
  c.mesh.update(mesh or {"data": -1, "fsdp": 1, "tensor": 1})
  return c


def model_flops(size: dict, self_cond: bool = False) -> float:
  """Matmul FLOPs of one train step of the diffusion objective (forward + backward = 3x forward).

  Per token and layer: q, k, v, out projections 8 D^2, MLP 4 D M, attention scores and values 4 L D;
  per token: input/output projections 4 E D (2x input with self-conditioning), the rounding logits
  2 V E; per example the timestep MLP 4 D M. Self-conditioning adds one more forward pass.
  """
  D, M, E, L, V, N = (size[k] for k in ("width", "mlp_dim", "emb_dim", "max_len", "vocab",
                                        "num_layers"))
  B = size["batch"]
  in_proj = 2 * E * D * (2 if self_cond else 1)
  per_token = N * (8 * D * D + 4 * D * M + 4 * L * D) + in_proj + 2 * E * D
  denoiser_fwd = B * L * per_token + B * 4 * D * M
  rounding_fwd = B * L * 2 * V * E
  passes = 3 + (1 if self_cond else 0)
  return float(passes * denoiser_fwd + 3 * rounding_fwd)


def _peak_rss_bytes() -> int:
  """Peak resident memory of this process so far, in bytes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _time(fn, repeats: int) -> list[float]:
  """Seconds of each of ``repeats`` calls of ``fn``."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


# ------------------------------------------------------------------------------------------ parts

def part_peak(quick: bool) -> dict:
  """GFLOP/s of a jitted float32 matmul per matrix size, and the best of them (the peak)."""
  import jax
  import jax.numpy as jnp
  best = {}
  for n in ((256, 512) if quick else (1024, 2048, 3072)):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    t = min(_time(lambda: f(a, a).block_until_ready(), 3 if quick else 8))
    best[n] = 2 * n**3 / t / 1e9
  return {"matmul_gflops_by_size": best, "matmul_peak_gflops": max(best.values())}


def _synthetic_batch(size: dict, seed: int = 0):
  """A batch of random token ids of ``size`` (lengths from L/2 to L, PAD after them)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  B, L = size["batch"], size["max_len"]
  ids = rng.integers(5, size["vocab"], (B, L)).astype(np.int32)
  lengths = rng.integers(L // 2, L + 1, (B,))
  ids[np.arange(L)[None] >= lengths[:, None]] = 0
  return {"ids": ids, "target_mask": np.ones_like(ids), "pad_mask": (ids == 0).astype(np.int32)}


def _compiled_train_step(name: str, self_cond: bool = False, mesh: dict | None = None):
  """(compiled step, state, two batches, mesh, rules, compile seconds) for a named size."""
  import jax
  from diffusion_text import families, optim, sharding, train
  from diffusion_text import train_state as ts
  size = SIZES[name]
  c = _config(size, self_cond, mesh)
  m = sharding.make_mesh(c.mesh)
  rules = sharding.axis_rules(c)
  model_cfg = families.model_config(c, size["vocab"])
  family = families.family_of(c)
  tx = optim.make_optimizer(c.optim, 1000)
  state, shardings = ts.create_train_state(family.init_params, model_cfg, tx, m, rules, seed=0)
  step = jax.jit(train.make_train_step(family.build(model_cfg), c, tx),
                 in_shardings=(shardings, sharding.batch_sharding(m)),
                 out_shardings=(shardings, sharding.replicated(m)), donate_argnums=0)
  batches = [sharding.global_batch(_synthetic_batch(size, i), m) for i in range(2)]
  with sharding.mesh_context(m, rules):
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
  return compiled, state, batches, m, rules, time.perf_counter() - t0


def part_train(name: str, steps: int, self_cond: bool = False, mesh: dict | None = None) -> dict:
  import jax
  import numpy as np
  from diffusion_text import sharding
  from diffusion_text import train_state as ts
  size = SIZES[name]
  compiled, state, batches, m, rules, compile_s = _compiled_train_step(name, self_cond, mesh)
  with sharding.mesh_context(m, rules):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    for i in range(2):  # warm-up
      state, sums = compiled(state, batches[i % 2])
    jax.block_until_ready(state)
    times = []
    for i in range(steps):
      t0 = time.perf_counter()
      state, sums = compiled(state, batches[i % 2])
      jax.block_until_ready(state)
      times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  tokens = size["batch"] * size["max_len"]
  return {"config": name, "self_cond": self_cond, "mesh": dict(zip(m.axis_names, m.devices.shape)),
          "devices": jax.device_count(), "params": ts.num_params(state.params),
          "steps_timed": steps, "step_s_median": med, "step_s_min": min(times),
          "tokens_per_s": tokens / med, "compile_s": compile_s,
          "xla_flops": float(cost.get("flops", float("nan"))) if cost else None,
          "model_flops": model_flops(size, self_cond),
          "loss_finite": bool(np.isfinite(float(sums["loss"]))),
          "peak_rss_bytes": _peak_rss_bytes()}


# XLA:CPU names its library matmul fusions after the library (YNNPACK, XNNPACK, oneDNN); plain dots
# and custom calls are matmuls too. Layout copies are the transposes XLA inserts around them.
_MATMUL_PREFIXES = ("ynn_", "xnn_", "onednn", "dot", "custom-call", "cublas", "gemm", "triton_gemm")


def _is_executor_span(name: str) -> bool:
  """Whether ``name`` is one of the runtime's own spans (they enclose operations; their exclusive
  time is scheduling/waiting)."""
  return "Execute" in name or "Await" in name or "ThreadPool" in name


def _op_kind(name: str) -> str:
  """The kind of an XLA operation by its name: "matmul", "layout_copy" or "other"."""
  if name.startswith(_MATMUL_PREFIXES):
    return "matmul"
  if "copy" in name or "transpose" in name:
    return "layout_copy"
  return "other"


def part_profile(name: str, steps: int = 4, top: int = 15) -> dict:
  """Where the train step's time goes: ``steps`` steps under ``jax.profiler``, the XLA operations'
  time summed per kind (matmul, layout copy, other) and the largest operations with their shapes
  and the JAX operation they come from (from the compiled HLO's metadata)."""
  import collections
  import glob
  import re
  import tempfile
  import jax
  from diffusion_text import sharding
  compiled, state, batches, m, rules, _ = _compiled_train_step(name)
  meta = {}
  for mt in re.finditer(r"%(\S+) = (\S+) fusion\([^\n]*?op_name=\"([^\"]*)\"", compiled.as_text()):
    meta[mt.group(1)] = {"shape": mt.group(2), "jax_op": mt.group(3)}
  with sharding.mesh_context(m, rules), tempfile.TemporaryDirectory() as d:
    for i in range(2):  # warm-up
      state, _ = compiled(state, batches[i % 2])
    jax.block_until_ready(state)
    jax.profiler.start_trace(d)
    t0 = time.perf_counter()
    for i in range(steps):
      state, _ = compiled(state, batches[i % 2])
    jax.block_until_ready(state)
    wall = (time.perf_counter() - t0) / steps
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
  per_op = collections.Counter()  # exclusive time: a while loop's span minus its body's ops
  for plane in data.planes:
    for line in plane.lines:
      # XLA:CPU runs operations on its client and Eigen threads; accelerators on their devices
      if not ((plane.name.startswith("/host:") and line.name.startswith("tf_XLA"))
              or plane.name.startswith("/device:")):
        continue
      stack = []  # [name, end_ns, exclusive_ns] of the enclosing events
      # "end: <op>" markers belong to their op's time; listener markers are not operations
      events = sorted(((e.start_ns, e.end_ns, e.name) for e in line.events
                       if not e.name.startswith(("end: ", "ThreadpoolListener"))),
                      key=lambda e: (e[0], -e[1]))
      for start, end, op in events + [(float("inf"), float("inf"), "")]:
        while stack and stack[-1][1] <= start:
          done = stack.pop()
          if not _is_executor_span(done[0]):
            per_op[done[0]] += done[2] / steps / 1e6
        if stack:
          stack[-1][2] -= end - start
        stack.append([op, end, end - start])
  total = sum(per_op.values())
  if total <= 0:
    raise RuntimeError("the profile holds no XLA operation events")
  by_kind = collections.Counter()
  for op, ms in per_op.items():
    by_kind[_op_kind(op)] += ms
  return {"config": name, "steps_profiled": steps, "step_s_under_profiler": wall,
          "op_ms_per_step": total, "threads_busy": total / 1e3 / wall,
          "by_kind_ms": dict(by_kind), "by_kind_share": {k: v / total for k, v in by_kind.items()},
          "top_ops": [{"op": op, "ms_per_step": ms, "kind": _op_kind(op), **meta.get(op, {})}
                      for op, ms in per_op.most_common(top)]}


def part_sample(name: str, batches: list, samplers: list, full_trajectory: bool,
                scan_layers: bool | None = None) -> dict:
  """Seconds per denoising step from the difference of two step counts (fixed costs cancel), the
  denoiser's forward pass alone, samples/s, and the full T-step trajectory; ``scan_layers``
  overrides the size's block layout (to compare the two)."""
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  from diffusion_text import denoiser, families
  size = SIZES[name] if scan_layers is None else {**SIZES[name], "scan_layers": scan_layers}
  c = _config(size)
  model_cfg = families.model_config(c, size["vocab"])
  model = denoiser.DiffusionLM(model_cfg)
  params = nn.meta.unbox(denoiser.init_params(model_cfg, jax.random.PRNGKey(0)))
  rows = []
  for B in batches:
    ids = jnp.asarray(_synthetic_batch({**size, "batch": B})["ids"])
    mask = jnp.ones_like(ids)
    z = jax.random.normal(jax.random.PRNGKey(1), (B, size["max_len"], size["emb_dim"]))
    fwd = jax.jit(lambda p, z: model.apply({"params": p}, z, jnp.full((B,), 7, jnp.int32)))
    fwd(params, z).block_until_ready()
    fwd_s = statistics.median(_time(lambda: fwd(params, z).block_until_ready(), 10))
    for sampler in samplers:
      # a wide step gap, the two lengths timed in alternation and the minimum of each kept: load
      # on a shared machine only ever adds time, and it hits both lengths alike (a narrow gap and
      # medians once gave a negative per-step time on the toy size, where a step is ~0.1 ms)
      k1, k2 = (10, 90) if size["T"] <= 100 else (20, 60)
      decs = {}
      for k in (k1, k2):
        decs[k] = families.family_of(c).make_decoder(model, c, sampler, k, False, 0.0)
        t0 = time.perf_counter()
        decs[k](params, jax.random.PRNGKey(0), ids, mask).block_until_ready()
        compile_and_first = time.perf_counter() - t0
      t = {k1: float("inf"), k2: float("inf")}
      for _ in range(7 if size["T"] <= 100 else 3):
        for k in (k1, k2):
          t0 = time.perf_counter()
          decs[k](params, jax.random.PRNGKey(0), ids, mask).block_until_ready()
          t[k] = min(t[k], time.perf_counter() - t0)
      per_step = (t[k2] - t[k1]) / (k2 - k1)
      row = {"config": name, "batch": B, "L": size["max_len"], "sampler": sampler,
             "step_s": per_step, "forward_s": fwd_s, "step_over_forward": per_step / fwd_s,
             f"trajectory_{k2}_s": t[k2], "samples_per_s_at_{}_steps".format(k2): B / t[k2],
             "compile_plus_first_call_s": compile_and_first,
             f"trajectory_{size['T']}_s_estimated": per_step * size["T"] + (t[k2] - per_step * k2)}
      if full_trajectory:
        dec = families.family_of(c).make_decoder(model, c, sampler, size["T"], False, 0.0)
        dec(params, jax.random.PRNGKey(0), ids, mask).block_until_ready()
        t0 = time.perf_counter()
        dec(params, jax.random.PRNGKey(1), ids, mask).block_until_ready()
        row[f"trajectory_{size['T']}_s"] = time.perf_counter() - t0
      rows.append(row)
  return {"rows": rows, "peak_rss_bytes": _peak_rss_bytes()}


def part_ar_decode(name: str, batch: int, beams: list) -> dict:
  """AR decoding (greedy, beam) of packed seq2seq rows at a named size, with the key/value cache
  and with a full forward per position (``cache=False``): seconds per batch, the two timed in
  alternation and the minimum of each kept. A random-init model rarely writes EOS, so every target
  position is decoded: the worst case for both."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import flax.linen as nn
  from diffusion_text import families
  from diffusion_text.baselines import ar
  from diffusion_text.data import packing
  size = SIZES[name]
  c = _config(size)
  c.model.family = "ar"
  model_cfg = families.model_config(c, size["vocab"])
  model = ar.ARTransformer(model_cfg)
  params = nn.meta.unbox(ar.init_params(model_cfg, jax.random.PRNGKey(0)))
  L, src_len = size["max_len"], size["max_len"] // 2
  rng = np.random.default_rng(0)
  rows = [packing.pack_source(list(rng.integers(5, size["vocab"], rng.integers(4, src_len))), L,
                              src_len, "fixed") for _ in range(batch)]
  ids, tm = (jnp.asarray(np.stack([r[k] for r in rows])) for k in (0, 1))
  out = []
  for beam in beams:
    fns = {cache: jax.jit(lambda p, i, m, cache=cache: (
        ar.greedy_decode(model, p, i, m, cache=cache) if beam == 1
        else ar.beam_decode(model, p, i, m, beam, cache=cache))) for cache in (True, False)}
    for f in fns.values():
      f(params, ids, tm).block_until_ready()
    t = {cache: float("inf") for cache in fns}
    for _ in range(3):
      for cache, f in fns.items():
        t0 = time.perf_counter()
        f(params, ids, tm).block_until_ready()
        t[cache] = min(t[cache], time.perf_counter() - t0)
    out.append({"config": name, "batch": batch, "L": L, "target_positions": L - src_len - 2,
                "beam": beam, "cached_s": t[True], "full_forward_s": t[False],
                "speedup": t[False] / t[True]})
  return {"rows": out}


def part_memory(name: str) -> dict:
  """Bytes per device of params + optimizer state (+ EMA) under data parallel and FSDP, from the
  shardings of the abstract state (nothing is allocated)."""
  import math
  import jax
  from diffusion_text import families, optim, sharding
  from diffusion_text import train_state as ts
  size = SIZES[name]
  out = {"config": name, "devices": jax.device_count()}
  for label, mesh in (("data_parallel", {"data": -1, "fsdp": 1, "tensor": 1}),
                      ("fsdp", {"data": 1, "fsdp": -1, "tensor": 1})):
    c = _config(size, mesh=mesh)
    m = sharding.make_mesh(c.mesh)
    model_cfg = families.model_config(c, size["vocab"])
    abstract, _ = ts.state_shardings(families.family_of(c).init_params, model_cfg,
                                     optim.make_optimizer(c.optim, 1000), m, sharding.axis_rules(c))
    per_device = sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize
                     for a in jax.tree.leaves(abstract))
    total = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract))
    out[label] = {"bytes_per_device": per_device, "bytes_total": total,
                  "params": ts.num_params(abstract.params)}
  return out


def part_pipeline(quick: bool, data) -> dict:
  """Input pipeline alone, with the data config ``data`` (the command line passes that of
  ``configs/e2e_diffuseq.py:cpu_nosc`` with the target at a fixed position): sequences/s of
  seq2seq batches (64 x L 96) in the first epoch (read + tokenize + pack every record) and the
  second (from the encode cache, ``data.encode_cache``). Records come from the prepared E2E
  MR->text TFDS train split when the E2E files are in ``$DIFFUSION_TEXT_DATA_DIR``, else from
  E2E-like synthetic records held in memory (20-word source, 25-word target), which skips the TFDS
  read and so runs faster."""
  import numpy as np
  from diffusion_text.data import pipeline, tokenizers
  c = data
  n = 2_000 if quick else 20_000
  data_dir = os.environ.get("DIFFUSION_TEXT_DATA_DIR", "")
  if not quick and os.path.exists(os.path.join(data_dir, "e2e", "diffusion_lm_format",
                                               "src1_train.txt")):
    records = pipeline.prepare_sources(c)["train"]
    source = "e2e_mr_text train (TFDS)"
  else:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(1000)]
    records = [{"index": i, "src": " ".join(rng.choice(words, 20)),
                "tgt": " ".join(rng.choice(words, 25)), "label": -1} for i in range(n)]
    source = "synthetic, in memory"
  n = min(n, len(records))
  tok = tokenizers.WordTokenizer.train(
      pipeline.split_texts(records, 2000, ("src", "tgt")), min_count=1)
  enc = pipeline.make_encoder(tok, c)
  batch, per_epoch = 64, n // 64
  out = {"source": source, "examples": n, "batch": batch, "max_len": c.max_len}
  for label, cache in (("uncached", 0), ("cached", n)):
    ds = pipeline.batched_dataset(records, enc, batch_size=batch, seed=0, cache_size=cache,
                                  max_examples=n)
    t = time.perf_counter()
    for k in range(per_epoch):
      ds[k]
    first = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(per_epoch, 2 * per_epoch):
      ds[k]
    second = time.perf_counter() - t
    out[label] = {"first_epoch_seq_per_s": per_epoch * batch / first,
                  "second_epoch_seq_per_s": per_epoch * batch / second}
  return out


# The measurements by name: ``python -m experiments.bench --part NAME --args JSON`` runs one (and
# passes ``pipeline`` its data config).
def part_source_cache(batch: int, steps: list) -> dict:
  """The recipe's encoder-decoder (``configs/e2e_diffuseq.py:cpu``, random init) sampling with
  DPM-Solver++ at each step count, the source encoded once (``decoding.decode_ids``) against the
  encoder run at every step: seconds per batch, timed in alternation, the minimum of three; and the
  share of output ids the two agree on."""
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  from configs import e2e_diffuseq
  from diffusion_text import decoding, denoiser, embeddings, families, samplers
  c = e2e_diffuseq.get_config("cpu")
  mc = families.model_config(c, 900)
  model = families.family_of(c).build(mc)
  params = nn.meta.unbox(denoiser.init_params(mc, jax.random.PRNGKey(0)))
  diff = families.diffusion_of(c)
  L, S = c.data.max_len, mc.src_len
  ids = jax.random.randint(jax.random.PRNGKey(1), (batch, L), 5, 900)
  mask = jnp.broadcast_to((jnp.arange(L) >= S).astype(jnp.int32), (batch, L))

  def every_step(r, i, m, n):
    emb = embeddings.table(params, c.model)
    x0 = samplers.sample(decoding.denoiser_of(model, params), emb, diff, r,
                         shape=(batch, L, mc.emb_dim), steps=n, sampler="dpm++2m",
                         x_cond_BxLxE=embeddings.embed(emb, i), mask_BxL=m)
    return decoding.round_ids(model, params, c, x0, i, m)
  out = []
  for n in steps:
    fns = {"once": jax.jit(lambda r, i, m, n=n: decoding.decode_ids(
        model, params, c, diff, r, i, m, sampler="dpm++2m", steps=n)),
           "every_step": jax.jit(lambda r, i, m, n=n: every_step(r, i, m, n))}
    got = {k: jax.device_get(f(jax.random.PRNGKey(2), ids, mask)) for k, f in fns.items()}
    t = {k: float("inf") for k in fns}
    for _ in range(3):
      for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(jax.random.PRNGKey(2), ids, mask))
        t[k] = min(t[k], time.perf_counter() - t0)
    out.append({"batch": batch, "L": L, "source_positions": S, "steps": n,
                "encoded_once_s": t["once"], "encoded_every_step_s": t["every_step"],
                "speedup": t["every_step"] / t["once"],
                "same_ids": float((got["once"] == got["every_step"]).mean())})
  return {"rows": out}


PARTS = {"peak": part_peak, "train": part_train, "sample": part_sample, "memory": part_memory,
         "pipeline": part_pipeline, "profile": part_profile, "ar_decode": part_ar_decode,
         "source_cache": part_source_cache}


def _run_part(part: str, devices: int = 1, **kwargs) -> dict:
  """The result of ``PARTS[part](**kwargs)``, run on ``devices`` (host) devices in a subprocess of
  the command line, so that peak RSS is per part and the device count can differ between parts."""
  flags_ = os.environ.get("XLA_FLAGS", "").split()
  flags_ = [f for f in flags_ if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, XLA_FLAGS=" ".join(
      flags_ + [f"--xla_force_host_platform_device_count={devices}"]))
  cmd = [sys.executable, "-m", "experiments.bench", "--part", part, "--args", json.dumps(kwargs)]
  print(f"[bench] {part} {kwargs} on {devices} device(s)", flush=True)
  r = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if r.returncode != 0:
    raise RuntimeError(f"bench part {part} {kwargs} failed:\n{r.stderr[-3000:]}")
  return json.loads(r.stdout.strip().splitlines()[-1])


def _environment() -> dict:
  """Python, machine, CPU count, package versions, ``XLA_FLAGS`` and the time of the run."""
  import importlib.metadata as md
  versions = {p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")}
  return {"python": platform.python_version(), "machine": platform.machine(),
          "cpu_count": os.cpu_count(), "versions": versions,
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "unix_time": round(time.time())}


def run_all(quick: bool, save=lambda result: None, full_trajectory: bool = False) -> dict:
  """The result of all parts in order (toy sizes and few repeats when ``quick``); ``save(result)``
  after each, so a run cut short keeps what it measured (``result["complete"]`` says whether every
  part ran). ``full_trajectory`` also times a full T-step sampling trajectory (not when ``quick``);
  otherwise it is estimated as T x the measured per-step time."""
  result = {"environment": _environment(), "quick": quick, "complete": False}
  result.update(_run_part("peak", quick=quick))
  result["pipeline"] = _run_part("pipeline", quick=quick)
  save(result)
  peak = result["matmul_peak_gflops"] * 1e9
  train_rows = []
  # e2e_paper (BERT-base denoiser) takes about 30 s a step on 2 cores: 3 timed steps
  for name, steps in ((("tiny", 3),) if quick else (("small", 12), ("e2e_cpu", 12),
                                                     ("e2e_paper", 3))):
    for sc in {"tiny": (True,), "e2e_cpu": (False, True)}.get(name, (False,)):
      row = _run_part("train", name=name, steps=steps, self_cond=sc)
      row["mfu"] = row["model_flops"] / row["step_s_median"] / peak
      train_rows.append(row)
      result["train"] = train_rows
      save(result)
  name = "tiny" if quick else "small"
  result["profile"] = _run_part("profile", name=name, steps=2 if quick else 4)
  save(result)
  result["sample"] = _run_part("sample", name=name, batches=[4] if quick else [16, 64],
                               samplers=["ddpm", "dpm++2m"],
                               full_trajectory=full_trajectory and not quick)["rows"]
  save(result)
  result["ar_decode"] = _run_part("ar_decode", name="tiny" if quick else "e2e_cpu",
                                  batch=4 if quick else 64,
                                  beams=[1, 2] if quick else [1, 4])["rows"]
  save(result)
  scaling = []
  for n in (1, 2) if quick else (1, 2, 8):
    scaling.append(_run_part("train", devices=n, name="tiny" if quick else "e2e_cpu",
                             steps=3 if quick else 10))
    result["mesh_scaling"] = scaling
    save(result)
  result["memory_per_device"] = _run_part("memory", devices=8,
                                          name="tiny" if quick else "e2e_paper")
  result["complete"] = True
  save(result)
  return result


def table(result: dict) -> str:
  """The result of ``run_all`` as a text table (one section per part)."""
  lines = [f"matmul peak: {result['matmul_peak_gflops']:.1f} GFLOP/s (float32, jitted)", "",
           "train step         sc  s/step(med)  s/step(min)  tokens/s  compile s  MFU    RSS MiB"]
  for r in result["train"]:
    lines.append(f"{r['config']:<18} {'y' if r['self_cond'] else 'n'}   {r['step_s_median']:>10.4f}"
                 f"  {r['step_s_min']:>11.4f}  {r['tokens_per_s']:>8.0f}  {r['compile_s']:>9.1f}"
                 f"  {100 * r['mfu']:>4.0f}%  {r['peak_rss_bytes'] / 2**20:>7.0f}")
  pipe = result["pipeline"]
  lines += ["", f"input pipeline ({pipe['source']}, batch {pipe['batch']} x L {pipe['max_len']}): "
            f"{pipe['uncached']['first_epoch_seq_per_s']:.0f} sequences/s tokenizing, "
            f"{pipe['cached']['second_epoch_seq_per_s']:.0f} from the encode cache"]
  prof = result["profile"]
  share = prof["by_kind_share"]
  lines += ["", f"profile of the {prof['config']} train step: XLA operations busy "
            f"{prof['threads_busy']:.2f} threads; matmuls {100 * share.get('matmul', 0):.0f}%, "
            f"layout copies {100 * share.get('layout_copy', 0):.0f}%, "
            f"other {100 * share.get('other', 0):.0f}% of their time"]
  lines += ["", "sampler   batch  s/step    forward s  step/forward"]
  for r in result["sample"]:
    lines.append(f"{r['sampler']:<9} {r['batch']:>5}  {r['step_s']:.4f}    {r['forward_s']:.4f}"
                 f"     {r['step_over_forward']:.2f}")
  lines += ["", "AR decoding  batch  beam  cached s  full-forward s  speedup"]
  for r in result.get("ar_decode", []):
    lines.append(f"{r['config']:<12} {r['batch']:>5}  {r['beam']:>4}  {r['cached_s']:>8.3f}"
                 f"  {r['full_forward_s']:>14.3f}  {r['speedup']:>7.1f}x")
  lines += ["", "devices (same global batch)  s/step(med)"]
  for r in result["mesh_scaling"]:
    lines.append(f"{r['devices']:>7} {str(r['mesh']):<28} {r['step_s_median']:.4f}")
  mem = result["memory_per_device"]
  lines += ["", f"params + EMA + Adam state per device, {mem['config']} on {mem['devices']} "
            "devices:"]
  for k in ("data_parallel", "fsdp"):
    lines.append(f"  {k:<14} {mem[k]['bytes_per_device'] / 2**20:8.1f} MiB "
                 f"(total {mem[k]['bytes_total'] / 2**20:.1f} MiB, {mem[k]['params']:,} params)")
  return "\n".join(lines)
