"""Pure train/eval steps and ``train_and_evaluate(config, workdir)``: the one training loop.

The loop runs the same jitted step on any mesh (one CPU device is a 1x1x1 mesh), resumes the exact run
from the newest checkpoint in ``workdir`` (state, RNG, data position), writes scalar metrics as JSON
lines (``metrics.jsonl``), logs a progress line with steps/s and tokens/s, periodically evaluates the
EMA model on held-out data and writes decoded samples.
"""
import contextlib
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
import numpy as np

from diffusion_text import (checkpointing, decoding, exported, families, generate, likelihood,
                            losses, optim, runs, sharding)
from diffusion_text import train_state as ts
from diffusion_text.data import pipeline
from diffusion_text.errors import CheckpointError, DataError, NumericsError

def _term_sums(terms: dict) -> dict:
  """Weighted sums of per-example terms plus the count, so averages over batches are exact."""
  w = terms["weight"]
  sums = {k: jnp.sum(v * w) for k, v in terms.items() if k != "weight"}
  sums["count"] = jnp.sum(w)
  return sums


def make_train_step(model, config, tx, context=None):
  """``train_step(state, batch) -> (state, metric sums)``; pure, for ``jax.jit``. ``context``: the
  family's ``setup`` output (a classifier's frozen base run)."""
  loss_terms = families.family_of(config).loss_terms
  ema_decay = config.train.ema_decay
  skip_nonfinite = config.train.skip_nonfinite_steps
  T = config.diffusion.num_steps
  t_probs = losses.T_SAMPLER_PROBS.get(config.diffusion.get("t_sampler"))

  def train_step(state: ts.TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    if isinstance(state, ts.LossAwareTrainState):  # diffusion.t_sampler=loss_aware|warped
      batch = dict(batch, t_probs=t_probs(state.t_stats, T))

    def loss_fn(params):
      terms = loss_terms(model, params, batch, rng, config, deterministic=False, context=context)
      drawn = (terms.pop(families.T_DRAW, None), terms.pop(families.T_LOSS, None))
      sums = _term_sums(terms)
      return sums["loss"] / jnp.maximum(sums["count"], 1.0), (sums, drawn)

    grads, (sums, (t_B, t_loss_B)) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    # EMA with warm-up (decay grows as (1+n)/(10+n)) so short runs are not dominated by the init.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    sums["grad_norm"] = optax.tree.norm(grads)
    new = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    if isinstance(state, ts.LossAwareTrainState):
      new = new.replace(t_stats=losses.loss_aware_update(state.t_stats, t_B, t_loss_B, T))
      # the sampler's share of the noisiest quarter of t (loss_q3's t), its size while uniform
      q3 = losses.quarter_of(jnp.arange(1, T + 1), T) == 3
      sums["t_p_q3"] = jnp.sum(jnp.where(q3, batch["t_probs"], 0.0)) * sums["count"]
    if skip_nonfinite:
      # Drop the update of a step whose loss or gradient is NaN/Inf; the data position still moves.
      ok = jnp.isfinite(sums["loss"]) & jnp.isfinite(sums["grad_norm"])
      kept = state.replace(step=state.step + 1)
      new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, kept)
      sums = {k: jnp.where(ok, v, 0.0) for k, v in sums.items()}
      sums["skipped"] = 1.0 - ok.astype(jnp.float32)
    return new, sums

  return train_step


def make_eval_step(model, config, context=None):
  """``eval_step(params, batch, rng) -> metric sums`` with dropout off."""
  loss_terms = families.family_of(config).loss_terms

  def eval_step(params, batch, rng):
    return _term_sums(loss_terms(model, params, batch, rng, config, deterministic=True,
                                 context=context))

  return eval_step


def make_nll_step(model, config):
  """Jitted ``(params, batch, rng) -> {"nats", "tokens"}`` sums of the held-out NLL: the variational
  bound with ``eval.nll_t`` stratified timesteps (diffusion), the exact NLL (AR); None for other
  families or when ``eval.nll_t`` is 0."""
  num_t, family = config.eval.nll_t, config.model.family
  if not num_t or family not in ("diffusion", "ar"):
    return None
  diffusion = families.diffusion_of(config)

  def step(params, batch, rng):
    o = likelihood.nll_terms(model, params, batch["ids"], batch["target_mask"], family, diffusion,
                             rng, num_t, config.model)
    return {"nats": jnp.sum(o["nats"]), "tokens": jnp.sum(o["tokens"])}
  return jax.jit(step)


def make_accuracy_step(model, config):
  """Jitted ``(params, batch, rng) -> {"token_acc_t<t>": (correct, words)}`` of a diffusion LM
  (``decoding.one_step_accuracy``); None for other families."""
  if config.model.family != "diffusion":
    return None
  diffusion = families.diffusion_of(config)
  return jax.jit(lambda params, batch, rng: decoding.one_step_accuracy(
      model, params, config, diffusion, rng, batch["ids"], batch["target_mask"],
      batch["pad_mask"]))


def _fmt(scalars: dict) -> str:
  return "  ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k not in ("grad_norm", "prior"))


def _check_finite(step: int, sums: dict) -> None:
  bad = [k for k, v in sums.items() if not np.isfinite(v)]
  if bad:
    raise NumericsError(f"non-finite {', '.join(bad)} at step {step}; checkpoints of earlier "
                        "steps are kept")


def _check_window(first_step: int, acc: list, indices: list, workdir: str) -> list:
  """The window's per-step sums on the host. Raises NumericsError naming the first step (and term)
  with a NaN/Inf, after writing that step's example indices to ``<workdir>/nonfinite_step<N>.json``."""
  host = sharding.to_host(acc)
  for i, sums in enumerate(host):
    bad = [k for k, v in sums.items() if not np.isfinite(v)]
    if bad:
      step = first_step + i
      path = os.path.join(workdir, f"nonfinite_step{step}.json")
      example_indices = np.asarray(sharding.to_host(indices[i])).tolist()
      if jax.process_index() == 0:
        runs.write_atomic(path, json.dumps({"step": step, "terms": bad,
                                        "example_indices": example_indices}))
      raise NumericsError(f"non-finite {', '.join(bad)} at step {step} (batch indices in {path}); "
                          "checkpoints of earlier steps are kept; train.skip_nonfinite_steps=True "
                          "skips such steps")
  return host


def _mean_of_sums(acc: list[dict]) -> dict:
  """Exact averages from per-batch (sum, count) metrics; ``grad_norm`` is averaged per step. A term
  ``K`` with a ``K_count`` companion is averaged over that count (e.g. the examples of one quarter
  of t) instead of all examples."""
  host = sharding.to_host(acc)  # a no-op for sums already on the host
  tot = {k: float(sum(h[k] for h in host)) for k in host[0]}
  count = max(tot.pop("count"), 1.0)
  own = {k[:-len("_count")]: tot.pop(k) for k in list(tot) if k.endswith("_count")}
  out = {k: v / (own[k] if k in own else count) for k, v in tot.items()
         if k not in ("grad_norm", "skipped") and own.get(k, 1.0) > 0}  # no draw of that t: none
  if "grad_norm" in tot:
    out["grad_norm"] = tot["grad_norm"] / max(len(host) - tot.get("skipped", 0.0), 1.0)
  if "skipped" in tot:
    out["skipped"] = tot["skipped"]
  return out


def held_out_batches(config, source, encode, mesh) -> list:
  """The first ``eval.num_batches`` batches of ``source`` in order (this process's rows): what the
  periodic held-out loss is measured on, and ``heldout.loss_run`` after training."""
  ds = pipeline.batched_dataset(
      source, encode, batch_size=config.eval.batch_size, seed=config.seed, shuffle=False,
      repeat=False, max_examples=config.data.max_eval_examples or None,
      rows=sharding.process_rows(mesh, config.eval.batch_size))
  return [ds[i] for i in range(min(len(ds), config.eval.num_batches))]


def evaluate(eval_step, params, eval_batches, mesh, seed: int, global_rows: int) -> dict:
  """Exact (sum, count) averages of the loss terms over held-out batches (this process's rows of
  global batches of ``global_rows``)."""
  return _mean_of_sums([eval_step(params, sharding.global_batch(b, mesh, global_rows),
                                  jax.random.PRNGKey(seed + i)) for i, b in enumerate(eval_batches)])


class _Preemption:
  """SIGTERM or a first Ctrl-C (SIGINT) sets a flag; the loop checkpoints after the current step and
  returns cleanly. A second Ctrl-C aborts at once (KeyboardInterrupt)."""

  def __init__(self):
    self.requested = None  # the signal's name once one arrived
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    if signum == signal.SIGINT:
      logging.warning("Ctrl-C: checkpointing after this step and stopping (Ctrl-C again aborts "
                      "without a checkpoint)")

  def restore(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}


RESUME_MODES = ("latest", "latest_valid")


def _restore(ckpt, restore_step, resume: str):
  """(state, data_state, step) from the newest checkpoint (``restore_step(step)`` reads one); with
  ``latest_valid`` fall back to older ones when it cannot be read."""
  steps = sorted(ckpt.all_steps(), reverse=True)
  for step in steps if resume == "latest_valid" else steps[:1]:
    try:
      state, data_state = restore_step(step)
      return state, data_state, step
    except CheckpointError as e:
      if resume != "latest_valid":
        raise CheckpointError(f"{e}; --resume=latest_valid falls back to an older one") from e
      moved = ckpt.quarantine(step)
      logging.warning("checkpoint %d is unreadable (%s); moved to %s, trying an older one", step, e,
                      moved)
  raise CheckpointError(f"no readable checkpoint in {ckpt.directory}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: Optional[int] = None, resume: str = "latest",
                       allow_config_change: bool = False, restart: bool = False) -> dict:
  """Trains (or resumes) the run in ``workdir``; returns the final eval metrics.

  One process writes a run directory at a time (``runs.WorkdirLock``), and a directory holding a
  run's history is never truncated: with no checkpoint to resume from it is refused unless
  ``restart``.

  Args:
    stop_at_step: checkpoint and return at this step, as a time-boxed job would (SIGTERM or Ctrl-C
      does the same at the end of the current step); running again resumes the same run.
    resume: ``latest`` restores the newest checkpoint or fails naming it; ``latest_valid`` falls back
      to the newest checkpoint that can be read.
    allow_config_change: resume even if the requested config differs from the saved one in keys
      that define the run (the saved config is replaced; the change is logged in metrics.jsonl).
    restart: move the run's files into ``workdir/previous-<UTC time>/`` and start a new run there.
  """
  with contextlib.ExitStack() as held:
    return _train_and_evaluate(config, workdir, held, stop_at_step=stop_at_step, resume=resume,
                               allow_config_change=allow_config_change, restart=restart)


def _has_checkpoints(ckpt_dir: str) -> bool:
  return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


def _train_and_evaluate(config, workdir, held: contextlib.ExitStack, *, stop_at_step, resume,
                        allow_config_change, restart) -> dict:
  changed = _check_workdir(config, workdir, resume, allow_config_change, restart)
  # Everything that can fail on bad input happens before the workdir is written to.
  sources = pipeline.prepare_sources(config.data)
  if "train" not in sources:
    raise DataError(f"dataset {config.data.dataset} has no train split (have {sorted(sources)})")
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(mesh, "train.batch_size", config.train.batch_size)
  sharding.check_batch(mesh, "eval.batch_size", config.eval.batch_size)
  is_main = jax.process_index() == 0
  ckpt_dir = os.path.join(workdir, "checkpoints")
  tok = pipeline.get_tokenizer(config.data, sources["train"], None if restart else workdir,
                               from_file=families.tokenizer_file(config), save=False)
  lengths = None if _has_checkpoints(ckpt_dir) and not restart else _lengths(config, sources, tok)
  _open_workdir(config, workdir, held, ckpt_dir, restart, is_main)
  if is_main and not os.path.exists(os.path.join(workdir, runs.TOKENIZER_FILE)):
    runs.save_tokenizer(workdir, tok)
  trainer = _Trainer(config, workdir, mesh, sources, tok, stop_at_step)
  ckpt = checkpointing.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints)
  preemption = _Preemption()
  scope = contextlib.ExitStack()
  try:
    scope.enter_context(sharding.mesh_context(mesh, trainer.rules))
    state, data_iter, start = trainer.init_or_restore(ckpt, resume)
    if is_main and changed:  # after the restore: a resume that fails leaves config.json as it was
      runs.write_config(workdir, config)
    log = runs.MetricsLog(workdir, start, enabled=is_main)
    scope.callback(log.close)
    if start == 0:  # (every checkpoint unreadable under latest_valid: a new run after all)
      log.write(0, data_lengths=lengths or _lengths(config, sources, tok))
    if changed:
      logging.warning("config changed on resume: %s", ", ".join(changed))
      log.write(start, config_changed=changed)
    return trainer.loop(state, data_iter, start, ckpt, log, preemption)
  finally:
    preemption.restore()
    ckpt.close()
    scope.close()


def _check_workdir(config, workdir, resume, allow_config_change, restart) -> list:
  """Refuses a workdir the run cannot use, before anything is read or written; returns the
  resumable config keys that differ from the saved run's (written and logged on resume)."""
  if resume not in RESUME_MODES:
    raise CheckpointError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f"--workdir {workdir} exists and is not a directory")
  if exported.is_exported(workdir):  # even with --restart: an export is not a run to move
    raise CheckpointError(f"--workdir {workdir} is an exported run (parameters for sampling, no "
                          "training state); train in a new directory")
  config_path = os.path.join(workdir, runs.CONFIG_FILE)
  if restart:
    return []  # the old run's files are moved aside, its config with them
  if os.path.exists(config_path):
    saved = runs.load_config(workdir).to_dict()
    diff = runs.config_differences(saved, config.to_dict())
    if diff and not allow_config_change:
      raise CheckpointError(f"{workdir} holds a run with a different config ({', '.join(diff[:5])}"
                            f"{' ...' if len(diff) > 5 else ''}); use a new --workdir "
                            "(or --allow_config_change)")
    # resumable changes too (e.g. a new num_train_steps): config.json always says what now runs
    return runs.config_differences(saved, config.to_dict(), include_resumable=True)
  if _has_checkpoints(os.path.join(workdir, "checkpoints")):
    raise CheckpointError(f"{workdir} has checkpoints but no {runs.CONFIG_FILE}")
  return []


def _lengths(config, sources, tok) -> dict:
  """The train split's length report for a new run; a source longer than the model takes is
  refused (a cut MR loses fields its target still says)."""
  lengths = pipeline.length_report(sources["train"], tok, config.data,
                                   config.data.max_train_examples or None)
  logging.info("data: %d train examples; truncated to data.max_len: %d targets, %d sources",
               lengths["examples"], lengths["target_truncated"], lengths["source_truncated"])
  if lengths["source_truncated"] and not config.data.get("cut_sources", False):
    raise DataError(f"{lengths['source_truncated']} of {lengths['examples']} train sources are "
                    f"longer than the model takes ({pipeline.source_limit(config.data)} tokens, "
                    "data.max_src_len); raise data.max_src_len (and data.max_len), or set "
                    "data.cut_sources=True to cut them")
  return lengths


def _open_workdir(config, workdir, held, ckpt_dir, restart, is_main) -> None:
  """Locks the workdir (one writer), moves a restarted run's files aside, refuses a history whose
  checkpoints are gone, and writes a new run's config.json."""
  if is_main:
    held.enter_context(runs.WorkdirLock(workdir))
    if restart and any(n != runs.LOCK_FILE and not n.startswith(runs.PREVIOUS_PREFIX)
                       for n in os.listdir(workdir)):
      logging.warning("--restart: moved the previous run's files to %s", runs.move_aside(workdir))
  if restart and jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("restart: files moved aside")
  # With no checkpoint, a history that reaches a checkpoint step (or quarantined checkpoints)
  # means the run's checkpoints are gone: starting over would erase it. A history that stops before
  # the first checkpoint is recomputed exactly by a fresh start (its lines go to metrics.rewound).
  quarantined = os.path.join(workdir, checkpointing.QUARANTINE_DIR)
  if not restart and not _has_checkpoints(ckpt_dir) and (
      runs.history_step(workdir) >= config.train.checkpoint_every_steps
      or (os.path.isdir(quarantined) and os.listdir(quarantined))):
    raise CheckpointError(
        f"{workdir} holds the history of a run up to step {runs.history_step(workdir)} "
        f"({runs.METRICS_FILE}) but no checkpoint to resume from; --restart moves its files to "
        f"{workdir}/{runs.PREVIOUS_PREFIX}<time>/ and starts over")
  os.makedirs(workdir, exist_ok=True)
  if is_main and not os.path.exists(os.path.join(workdir, runs.CONFIG_FILE)):
    runs.write_config(workdir, config)


class _Trainer:
  """The model, data and steps of one run, and its loop: ``init_or_restore``, then ``loop``."""

  def __init__(self, config, workdir, mesh, sources, tok, stop_at_step):
    self.config, self.workdir, self.mesh, self.tok = config, workdir, mesh, tok
    self.sources, self.stop_at_step = sources, stop_at_step
    self.rules = sharding.axis_rules(config)
    self.model_cfg = families.model_config(config, tok.vocab_size)
    self.family = families.family_of(config)
    # a frozen run the loss reads (a classifier's base, a student's teacher), laid out on this mesh
    self.context = self.family.setup(config, functools.partial(generate.load_run, mesh=mesh))
    self.model = self.family.build(self.model_cfg)
    self.tx = optim.make_optimizer(config.optim, config.train.num_train_steps)
    _, self.shardings = ts.state_shardings(self.family.init_params, self.model_cfg, self.tx, mesh,
                                           self.rules, ts.t_stats_of(config))
    self.encode = pipeline.make_encoder(tok, config.data)
    self.eval_batches = []
    if "validation" in sources:
      self.eval_batches = held_out_batches(
          config, pipeline.model_examples(sources["validation"], tok, config.data), self.encode,
          mesh)

  def init_or_restore(self, ckpt, resume: str):
    """(state, data iterator, step): a new run's, or the newest checkpoint's (in the requested
    block layout whatever layout the checkpoint has: ``model.scan_layers``)."""
    c, mesh = self.config, self.mesh
    # Each process loads only its rows of every global batch; the global batch is the same for any
    # number of processes, so a multi-host run sees exactly the data of a single-host one.
    train_batches = pipeline.batched_dataset(
        pipeline.model_examples(self.sources["train"], self.tok, c.data,
                                c.data.max_train_examples or None),
        self.encode, batch_size=c.train.batch_size, seed=c.seed,
        max_examples=c.data.max_train_examples or None,
        rows=sharding.process_rows(mesh, c.train.batch_size), cache_size=c.data.encode_cache)
    data_iter = pipeline.DataIterator(train_batches)
    t_stats = ts.t_stats_of(c)
    if ckpt.latest_step() is None:
      state, _ = ts.create_train_state(self.family.init_params, self.model_cfg, self.tx, mesh,
                                       self.rules, c.seed, t_stats=t_stats)
      start = getattr(self.context, "init_params", None)
      if start is not None:  # a step-distilled student starts as its teacher
        state = ts.start_from(state, start)
      logging.info("new run in %s: %s parameters, vocab %d", self.workdir,
                   f"{ts.num_params(state.params):,}", self.tok.vocab_size)
      return state, data_iter, 0
    state, data_state, restored = _restore(ckpt, lambda s: ts.restore_in_layout(
        ckpt, s, self.family.init_params, self.model_cfg, self.tx, mesh, self.rules, t_stats),
        resume)
    data_iter.set_state(data_state)
    logging.info("resumed %s at step %d (checkpoint %d)", self.workdir, int(state.step), restored)
    return state, data_iter, int(state.step)

  def loop(self, state, data_iter, start: int, ckpt, log, preemption) -> dict:
    """Steps from ``start`` to ``train.num_train_steps`` (or ``stop_at_step``, or a signal):
    progress lines, held-out evaluation and samples, checkpoints. Returns the last eval metrics."""
    c, mesh = self.config, self.mesh
    num_steps = c.train.num_train_steps
    train_step = jax.jit(
        make_train_step(self.model, c, self.tx, self.context),
        in_shardings=(self.shardings, sharding.batch_sharding(mesh)),
        out_shardings=(self.shardings, sharding.replicated(mesh)), donate_argnums=0)
    evaluator = self._evaluator(log)
    progress = _Progress(c, start, log, self.workdir)
    eval_metrics, t_start = {}, time.time()
    for step in range(start + 1, num_steps + 1):
      batch = sharding.global_batch(next(data_iter), mesh, c.train.batch_size)
      state, sums = train_step(state, batch)
      progress.add(batch["index"], sums)
      is_last = step == num_steps
      # Every process must take the same branch: a SIGTERM seen by one host stops all of them. With
      # several processes the flag is agreed at log steps only (a collective each step would make
      # the host wait for every step and lose async dispatch); one process checks every step.
      agree_now = jax.process_count() == 1 or step % c.train.log_every_steps == 0
      stopping = step == self.stop_at_step or (
          agree_now and sharding.any_process(bool(preemption.requested)))
      if step % c.train.log_every_steps == 0 or is_last or stopping or (
          step % c.train.checkpoint_every_steps == 0):
        ckpt.check()  # a failed async save (disk full, ...) stops the run here, not silently
        progress.report(step)
      if self.eval_batches and (step % c.train.eval_every_steps == 0 or is_last):
        eval_metrics = evaluator(step, state.ema_params)
      if step % c.train.checkpoint_every_steps == 0 or is_last or stopping:
        ckpt.save(step, state, data_iter.get_state(), force=is_last or stopping)
      if stopping:
        ckpt.wait()
        why = (f"{preemption.requested} received" if preemption.requested
               else "stop_at_step reached")
        logging.info("%s: checkpoint of step %d saved in %s; run again to resume", why, step,
                     self.workdir)
        break
    logging.info("done: %d steps in %.0fs", int(state.step) - start, time.time() - t_start)
    return eval_metrics

  def _evaluator(self, log):
    """``(step, ema_params) -> eval metrics``: held-out loss terms, bits per token, one-step token
    accuracy, then logged samples (conditioned on the first held-out sources for seq2seq)."""
    c, mesh, e = self.config, self.mesh, self.config.eval
    eval_step = jax.jit(make_eval_step(self.model, c, self.context))
    nll_step = make_nll_step(self.model, c)
    acc_step = make_accuracy_step(self.model, c)
    sample_fn = self.family.make_decoder(self.model, c, e.sampler, e.sample_steps, e.clamp, 0.0)
    if c.data.task == "seq2seq" and "validation" in self.sources and e.num_samples:
      first = [self.encode(self.sources["validation"][i])
               for i in range(min(e.num_samples, len(self.sources["validation"])))]
      sample_inputs = (np.stack([r["ids"] for r in first]),
                       np.stack([r["target_mask"] for r in first]))
    else:
      sample_inputs = generate.unconditional_inputs(e.num_samples, c.data.max_len)

    def run(step: int, params) -> dict:
      metrics = evaluate(eval_step, params, self.eval_batches, mesh, c.seed, e.batch_size)
      if nll_step is not None:  # held-out bits/token (bound for diffusion, exact for AR)
        sums = sharding.to_host([
            nll_step(params, sharding.global_batch(b, mesh, e.batch_size),
                     jax.random.PRNGKey(c.seed + i)) for i, b in enumerate(self.eval_batches)])
        nats, tokens = (sum(float(x[k]) for x in sums) for k in ("nats", "tokens"))
        metrics["nll_bits_per_token"] = nats / max(tokens, 1.0) / math.log(2)
      if acc_step is not None:  # one-step token accuracy at high noise, on the first batch
        b = sharding.global_batch(self.eval_batches[0], mesh, e.batch_size)
        for k, (right, words) in sharding.to_host(
            acc_step(params, b, jax.random.PRNGKey(c.seed))).items():
          metrics[k] = float(right) / max(float(words), 1.0)
      if c.train.skip_nonfinite_steps:
        if not all(np.isfinite(v) for v in metrics.values()):
          logging.warning("non-finite eval metrics at step %d: %s", step, metrics)
      else:
        _check_finite(step, metrics)
      log.write(step, **{f"eval/{k}": v for k, v in metrics.items()})
      logging.info("eval step %d: %s", step, _fmt(metrics))
      if e.num_samples:
        ids = sharding.to_host(sample_fn(params, jax.random.PRNGKey(step), *sample_inputs))
        texts = [generate.decode_output(self.tok, x, c.data.task, c.data.target_start)
                 for x in ids]
        log.write(step, samples=texts)
        for txt in texts[:3]:
          logging.info("  sample: %s", txt)
      return metrics
    return run


class _Progress:
  """The training window between progress lines: its per-step sums and batch indices, checked for
  non-finite values and logged as means with steps/s, tokens/s and the learning rate."""

  def __init__(self, config, start: int, log, workdir: str):
    self.config, self.log, self.workdir = config, log, workdir
    self.acc, self.indices, self.first = [], [], start + 1
    self.t_last, self.step_last = time.time(), start
    self.tokens_per_step = config.train.batch_size * config.data.max_len

  def add(self, indices, sums) -> None:
    self.indices.append(indices)
    self.acc.append(sums)

  def report(self, step: int) -> None:
    c, num_steps = self.config, self.config.train.num_train_steps
    scalars = _mean_of_sums(_check_window(self.first, self.acc, self.indices, self.workdir))
    self.acc, self.indices, self.first = [], [], step + 1
    now = time.time()
    rate = (step - self.step_last) / max(now - self.t_last, 1e-9)
    self.t_last, self.step_last = now, step
    lr = float(optim.learning_rate_schedule(c.optim, num_steps)(step))
    self.log.write(step, **{f"train/{k}": v for k, v in scalars.items()}, lr=lr,
                   steps_per_sec=rate, tokens_per_sec=rate * self.tokens_per_step)
    logging.info("step %d/%d  %s  %.2f steps/s  %.0f tok/s  eta %.0fs", step, num_steps,
                 _fmt(scalars), rate, rate * self.tokens_per_step,
                 (num_steps - step) / max(rate, 1e-9))
