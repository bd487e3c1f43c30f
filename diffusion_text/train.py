"""Pure train/eval steps and ``train_and_evaluate(config, workdir)``: the one training loop.

The loop runs the same jitted step on any mesh (one CPU device is a 1x1x1 mesh), resumes the exact run
from the newest checkpoint in ``workdir`` (state, RNG, data position), writes scalar metrics as JSON
lines (``metrics.jsonl``), logs a progress line with steps/s and tokens/s, periodically evaluates the
EMA model on held-out data and writes decoded samples.
"""
import json
import logging
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffusion_text import checkpointing, families, generate, optim, sharding
from diffusion_text import train_state as ts
from diffusion_text.data import pipeline
from diffusion_text.errors import CheckpointError, DataError, NumericsError

METRICS_FILE = "metrics.jsonl"
# Keys that may differ between the saved and the requested config when resuming.
RESUMABLE_KEYS = ("train.num_train_steps", "train.log_every_steps", "train.eval_every_steps",
                  "train.checkpoint_every_steps", "train.keep_checkpoints", "data.source_dir",
                  "data.tfds_dir", "data.max_eval_examples", "eval.", "sample.", "mesh.")


def _term_sums(terms: dict) -> dict:
  """Weighted sums of per-example terms plus the count, so averages over batches are exact."""
  w = terms["weight"]
  sums = {k: jnp.sum(v * w) for k, v in terms.items() if k != "weight"}
  sums["count"] = jnp.sum(w)
  return sums


def make_train_step(model, config, tx):
  """``train_step(state, batch) -> (state, metric sums)``; pure, for ``jax.jit``."""
  loss_terms = families.family_of(config).loss_terms
  ema_decay = config.train.ema_decay

  def train_step(state: ts.TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      sums = _term_sums(loss_terms(model, params, batch, rng, config, deterministic=False))
      return sums["loss"] / jnp.maximum(sums["count"], 1.0), sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    # EMA with warm-up (decay grows as (1+n)/(10+n)) so short runs are not dominated by the init.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    sums["grad_norm"] = jax.tree.reduce(lambda a, g: a + jnp.sum(g * g), grads, 0.0) ** 0.5
    return state.replace(step=state.step + 1, params=params, ema_params=ema,
                         opt_state=opt_state), sums

  return train_step


def make_eval_step(model, config):
  """``eval_step(params, batch, rng) -> metric sums`` with dropout off."""
  loss_terms = families.family_of(config).loss_terms

  def eval_step(params, batch, rng):
    return _term_sums(loss_terms(model, params, batch, rng, config, deterministic=True))

  return eval_step


def flatten_config(d, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v.tolist() if isinstance(v, np.ndarray) else v
  return out


def config_differences(saved: dict, requested: dict) -> list[str]:
  """Keys whose values differ (JSON-normalised), ignoring those a resume may change."""
  a = flatten_config(json.loads(json.dumps(saved)))
  b = flatten_config(json.loads(json.dumps(requested)))
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k) != b.get(k)
          and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)]


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


class MetricsLog:
  """Appends JSON lines; on resume, drops lines from steps after the restored checkpoint."""

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    if enabled and os.path.exists(self.path):
      with open(self.path) as f:
        keep = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= resume_step]
      _write_atomic(self.path, "".join(keep))

  def write(self, step: int, **values) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")


def _fmt(scalars: dict) -> str:
  return "  ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k not in ("grad_norm", "prior"))


def _check_finite(step: int, sums: dict) -> None:
  bad = [k for k, v in sums.items() if not np.isfinite(v)]
  if bad:
    raise NumericsError(f"non-finite {', '.join(bad)} at step {step}; last checkpoint kept")


def _mean_of_sums(acc: list[dict]) -> dict:
  """Exact averages from per-batch (sum, count) metrics; ``grad_norm`` is averaged per step."""
  host = jax.device_get(acc)
  tot = {k: float(sum(h[k] for h in host)) for k in host[0]}
  count = max(tot.pop("count"), 1.0)
  out = {k: v / count for k, v in tot.items() if k != "grad_norm"}
  if "grad_norm" in tot:
    out["grad_norm"] = tot["grad_norm"] / len(host)
  return out


def evaluate(eval_step, params, eval_batches, mesh, seed: int) -> dict:
  """Exact (sum, count) averages of the loss terms over held-out batches."""
  return _mean_of_sums([eval_step(params, sharding.global_batch(b, mesh),
                                  jax.random.PRNGKey(seed + i)) for i, b in enumerate(eval_batches)])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: Optional[int] = None) -> dict:
  """Trains (or resumes) the run in ``workdir``; returns the final eval metrics.

  ``stop_at_step`` ends the process's work early at that step with a checkpoint, as a preemption or a
  time-boxed job would; running again resumes the same run.
  """
  is_main = jax.process_index() == 0
  config_path = os.path.join(workdir, generate.CONFIG_FILE)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.exists(config_path):
    saved = generate.load_config(workdir).to_dict()
    diff = config_differences(saved, config.to_dict())
    if diff:
      raise CheckpointError(f"{workdir} holds a run with a different config ({', '.join(diff[:5])}"
                            f"{' ...' if len(diff) > 5 else ''}); use a new --workdir")
  elif os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise CheckpointError(f"{workdir} has checkpoints but no {generate.CONFIG_FILE}")

  # Everything that can fail on bad input happens before the workdir is written to.
  sources = pipeline.prepare_sources(config.data)
  if "train" not in sources:
    raise DataError(f"dataset {config.data.dataset} has no train split (have {sorted(sources)})")
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.axis_rules(config)
  os.makedirs(workdir, exist_ok=True)
  if is_main and not os.path.exists(config_path):
    _write_atomic(config_path, config.to_json(indent=2))
  tok = pipeline.get_tokenizer(config.data, sources["train"], workdir if is_main else None)
  model_cfg = families.model_config(config, tok.vocab_size)
  family = families.family_of(config)
  model = family.build(model_cfg)
  num_steps = config.train.num_train_steps
  tx = optim.make_optimizer(config.optim, num_steps)
  abstract, shardings = ts.state_shardings(family.init_params, model_cfg, tx, mesh, rules)
  ckpt = checkpointing.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints)
  try:
    latest = ckpt.latest_step()

    encode = pipeline.make_encoder(tok, config.data)
    train_batches = pipeline.batched_dataset(
        sources["train"], encode, batch_size=config.train.batch_size, seed=config.seed,
        max_examples=config.data.max_train_examples or None)
    data_iter = pipeline.DataIterator(train_batches)
    eval_ds = pipeline.batched_dataset(
        sources["validation"], encode, batch_size=config.eval.batch_size, seed=config.seed,
        shuffle=False, repeat=False, max_examples=config.data.max_eval_examples or None)
    eval_batches = [eval_ds[i] for i in range(min(len(eval_ds), config.eval.num_batches))]
    eval_batches = [b for b in eval_batches if len(b["ids"]) == config.eval.batch_size]

    if latest is None:
      state, _ = ts.create_train_state(family.init_params, model_cfg, tx, mesh, rules,
                                       config.seed)
      start = 0
      logging.info("new run in %s: %s parameters, vocab %d", workdir,
                   f"{ts.num_params(state.params):,}", tok.vocab_size)
    else:
      state, data_state = ckpt.restore(latest, abstract)
      data_iter.set_state(data_state)
      start = int(state.step)
      logging.info("resumed %s at step %d", workdir, start)
    log = MetricsLog(workdir, start, enabled=is_main)

    train_step = jax.jit(
        make_train_step(model, config, tx),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, config))
    e = config.eval
    sample_fn = family.make_decoder(model, config, e.sampler, e.sample_steps, e.clamp, 0.0)
    # Logged samples: conditioned on the first held-out sources (seq2seq), else unconditional.
    if config.data.task == "seq2seq" and eval_batches:
      sample_inputs = (eval_batches[0]["ids"][:e.num_samples],
                       eval_batches[0]["target_mask"][:e.num_samples])
    else:
      sample_inputs = generate.unconditional_inputs(e.num_samples, config.data.max_len)

    tokens_per_step = config.train.batch_size * config.data.max_len
    acc, eval_metrics = [], {}
    t_last, step_last = time.time(), start
    t_start = time.time()
    for step in range(start + 1, num_steps + 1):
      batch = sharding.global_batch(next(data_iter), mesh)
      state, sums = train_step(state, batch)
      acc.append(sums)
      is_last = step == num_steps
      if step % config.train.log_every_steps == 0 or is_last or step == stop_at_step or (
          step % config.train.checkpoint_every_steps == 0):
        scalars = _mean_of_sums(acc)
        acc = []
        _check_finite(step, scalars)
        now = time.time()
        rate = (step - step_last) / max(now - t_last, 1e-9)
        t_last, step_last = now, step
        lr = float(optim.learning_rate_schedule(config.optim, num_steps)(step))
        log.write(step, **{f"train/{k}": v for k, v in scalars.items()}, lr=lr,
                  steps_per_sec=rate, tokens_per_sec=rate * tokens_per_step)
        eta = (num_steps - step) / max(rate, 1e-9)
        logging.info("step %d/%d  %s  %.2f steps/s  %.0f tok/s  eta %.0fs", step, num_steps,
                     _fmt(scalars), rate, rate * tokens_per_step, eta)
      if eval_batches and (step % config.train.eval_every_steps == 0 or is_last):
        eval_metrics = evaluate(eval_step, state.ema_params, eval_batches, mesh, config.seed)
        _check_finite(step, eval_metrics)
        log.write(step, **{f"eval/{k}": v for k, v in eval_metrics.items()})
        logging.info("eval step %d: %s", step, _fmt(eval_metrics))
        if e.num_samples:
          ids = np.asarray(sample_fn(state.ema_params, jax.random.PRNGKey(step), *sample_inputs))
          texts = [generate.decode_output(tok, x, config.data.task) for x in ids]
          log.write(step, samples=texts)
          for txt in texts[:3]:
            logging.info("  sample: %s", txt)
      stopping = step == stop_at_step
      if step % config.train.checkpoint_every_steps == 0 or is_last or stopping:
        ckpt.save(step, state, data_iter.get_state(), force=is_last or stopping)
      if stopping:
        logging.info("stopping at step %d as asked; run again to resume", step)
        break
  finally:
    ckpt.close()
  logging.info("done: %d steps in %.0fs", int(state.step) - start, time.time() - t_start)
  return eval_metrics
