"""A run's held-out likelihood: bits per token (the variational bound, or an AR run's exact NLL)
and the training loop's held-out loss terms, with today's code."""
import time

import jax
import numpy as np

from diffusion_text import batching, likelihood, sharding, train
from diffusion_text.data import pipeline
from diffusion_text.generate import Run


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
  per_seq = map_batches(fn, run.params, np.asarray(ids), np.asarray(mask), batch_size, seed)
  result = likelihood.summarize(per_seq)
  result.update(estimator="exact AR NLL" if is_ar else f"ELBO, {num_t} stratified t",
                checkpoint_step=run.step)
  return result


def map_batches(fn, params, ids, mask, batch_size: int, seed: int) -> dict:
  """``fn(params, ids, mask, rng) -> {name: (B,)}`` over rows in fixed-size batches (the last one
  padded with copies, so one compiled shape serves all; padded rows are dropped)."""
  parts = []
  for start, n, (b_ids, b_mask) in batching.padded_batches(batch_size, ids, mask):
    out = jax.device_get(fn(params, b_ids, b_mask, jax.random.PRNGKey(seed + start)))
    parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
