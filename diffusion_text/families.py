"""Model families behind one training loop: the embedding diffusion LM and the AR baseline.

A family says how to build and initialise its Flax module, its per-example training terms, and how to
generate the target positions of packed inputs. ``config.model.family`` picks one; everything else
(data, loop, checkpoints, evaluation) is shared.
"""
import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp

from diffusion_text import (classifier, control, decoding, denoiser, embeddings, losses, process,
                            runs, samplers, step_distill)
from diffusion_text.baselines import ar


def model_config(config, vocab_size: int) -> denoiser.ModelConfig:
  m = config.model
  c = config.classifier
  num_labels = c.num_classes if m.family == "classifier" and c.labels == "label" else 0
  return denoiser.ModelConfig(
      vocab_size=vocab_size, max_len=config.data.max_len, emb_dim=m.emb_dim, width=m.width,
      num_layers=m.num_layers, num_heads=m.num_heads, mlp_dim=m.mlp_dim, dropout=m.dropout,
      emb_init_std=m.emb_init_std, scan_layers=m.scan_layers, dtype=m.dtype,
      self_cond=m.self_cond, absorbing=config.diffusion.absorb_prob > 0, x0_head=m.x0_head,
      emb_norm=m.emb_norm, emb_scale=m.emb_scale, logits_head=m.logits_head,
      num_labels=num_labels,
      src_len=(config.data.max_src_len or config.data.max_len // 2) + 2
      if m.get("arch") == "encoder_decoder" else 0, positions=m.get("positions", "separate"),
      rope=m.get("rope", False))


def diffusion_of(config) -> process.Diffusion:
  return process.Diffusion(config.diffusion.schedule, config.diffusion.num_steps)


@dataclasses.dataclass(frozen=True)
class Family:
  build: Callable          # ModelConfig -> nn.Module
  init_params: Callable    # (ModelConfig, rng) -> boxed params
  loss_terms: Callable     # (model, params, batch, rng, config, deterministic, context) -> {name: (B,)}
  make_decoder: Callable   # (model, config, sampler, steps, clamp, eta, commit=False) -> jitted fn
  decoders: tuple          # names accepted as eval.sampler / sample.sampler
  # (config, load_run) -> what the loss needs from outside the run, read once before training (a
  # classifier's frozen base run); None for self-contained families
  setup: Callable = lambda config, load_run: None
  # whether a loaded run (``generate.load_run``) holds it too: a classifier samples with its base
  # run; a step-distilled student samples alone (its teacher is for its training loss only)
  setup_on_load: bool = True


# --------------------------------------------------------------------------------- diffusion LM

# per-example terms that are not metrics: each example's t and its unweighted t-dependent loss,
# returned when the train step asks for a loss-aware t draw (``diffusion.t_sampler``)
T_DRAW, T_LOSS = "t_draw", "t_loss"


def _diffusion_terms(model, params, batch, rng, config, deterministic, context=None):
  if context is not None:  # a student of a step_distill teacher
    return step_distill.loss_terms(model, params, batch, rng, config, deterministic, context)
  rng_loss, rng_dropout, rng_cond = jax.random.split(rng, 3)
  rng_reveal = jax.random.fold_in(rng, 7)
  d = config.diffusion
  denoise = lambda z, t, x_sc: model.apply({"params": params}, z, t, x_sc,
                                           deterministic=deterministic,
                                           rngs={"dropout": rng_dropout},
                                           return_logits=d.ce_weight > 0)
  emb = embeddings.table(params, config.model)
  ids = batch["ids"]
  if d.cond_drop_prob > 0 and not deterministic:  # held-out loss stays the conditional one
    ids = losses.drop_condition(ids, batch["target_mask"], rng_cond, d.cond_drop_prob)
  target_mask = batch["target_mask"]
  if d.reveal_prob > 0 and not deterministic:  # held-out loss stays the plain one
    target_mask = losses.reveal_targets(target_mask, batch["pad_mask"], rng_reveal, d.reveal_prob)
  t = losses.diffusion_lm_loss(denoise, emb, ids, target_mask,
                               batch["pad_mask"], diffusion_of(config), rng_loss,
                               loss_on_pad=config.diffusion.loss_on_pad,
                               pad_weight=1.0 if deterministic else d.pad_weight,
                               self_cond_prob=(config.diffusion.self_cond_prob
                                               if config.model.self_cond else 0.0),
                               ce_weight=d.ce_weight,
                               # the held-out loss is the plain estimate (uniform t, no absorbed
                               # words: sampling starts from Gaussian noise; PAD weighted as words),
                               # so it compares runs trained with and without these training-only
                               # levers
                               absorbing_E=params.get("absorbing"),
                               absorb_prob=0.0 if deterministic else d.absorb_prob,
                               t_power=1.0 if deterministic else d.t_power,
                               t_probs_T=None if deterministic else batch.get("t_probs"),
                               reweight_t=losses.T_SAMPLER_REWEIGHTS.get(d.get("t_sampler"), True))
  terms = {"loss": t.total, "mse": t.mse, "rounding": t.rounding, "prior": t.prior,
           "weight": t.weight}
  if d.ce_weight > 0:
    terms["ce"] = t.ce
  # Instruments: the loss by quarter of t (DiffuSeq's q0..q3), averaged over the examples that
  # drew that quarter, and the RMS of the target words' embeddings as read (with emb_norm=none it
  # drifts during training, which moves the schedule's effective signal-to-noise ratio).
  quarter = losses.quarter_of(t.t, d.num_steps)
  for q in range(4):
    terms[f"loss_q{q}"] = t.raw_total * (quarter == q)
    terms[f"loss_q{q}_count"] = (quarter == q).astype(jnp.float32)
  words = ((batch["target_mask"] > 0) & (batch["pad_mask"] == 0)).astype(jnp.float32)
  sq = jnp.mean(embeddings.embed(emb, batch["ids"]) ** 2, -1)
  terms["emb_rms"] = jnp.sqrt(jnp.sum(sq * words, -1) / jnp.maximum(jnp.sum(words, -1), 1.0))
  if "t_probs" in batch and not deterministic:  # for the train step's loss-aware history
    terms[T_DRAW], terms[T_LOSS] = t.t, t.t_loss
  return terms


def _diffusion_decoder(model, config, sampler, steps, clamp, eta, commit=False):
  """Jitted ``(params, rng, ids_BxL, target_mask_BxL) -> ids_BxL``: positions with mask 0 are held
  at the embeddings of ``ids`` (a seq2seq source); mask-1 positions are generated (``commit`` and
  the config's ``sample.score_temp``: ``samplers.sample``; ``sample.logit_temp``:
  ``decoding.denoiser_of``; ``sample.grid_power``: ``process.timestep_grid``). With
  ``sample.slot_guidance`` > 0 it takes each row's word groups (``control.slot_groups``) after the
  mask and is guided toward saying one word of each (``control.presence_term``), that being the
  ascent's step size (Adagrad normalises the gradient, so the step, not a weight, sets the pull).
  ``sample.cfg_scale`` other than 1: classifier-free guidance (``decoding.cfg_denoiser``)."""
  diffusion = diffusion_of(config)
  kwargs = decoding.dial_kwargs(config.sample, diffusion, steps)
  dials = decoding.dials(config.sample)
  step_size = dials["slot_guidance"]
  guidance = (decoding.Guidance(terms=(control.presence_term(),), step_size=step_size)
              if step_size else None)
  cfg_scale = None if dials["cfg_scale"] == 1.0 else dials["cfg_scale"]
  decoding.require_null_model(config, cfg_scale, "sample.cfg_scale: the run")

  @jax.jit
  def decode(params, rng, ids_BxL, target_mask_BxL, groups_BxGxW=None):
    if guidance is not None and groups_BxGxW is None:
      raise ValueError("sample.slot_guidance needs each row's MR word groups "
                       "(Run.generate computes them from the sources)")
    return decoding.decode_ids(model, params, config, diffusion, rng, ids_BxL, target_mask_BxL,
                               sampler=sampler, steps=steps, clamp=clamp, eta=eta,
                               commit=commit, guidance=guidance, cfg_scale=cfg_scale,
                               term_args=((groups_BxGxW, target_mask_BxL),), **kwargs)

  return decode


def _diffusion_setup(config, load_run):
  """A step-distilled student's frozen teacher (``step_distill.setup``); None for a plain run."""
  if config.get("step_distill") and config.step_distill.teacher_run:
    return step_distill.setup(config, load_run)
  return None


# ------------------------------------------------------------------------------------ AR baseline

def _ar_terms(model, params, batch, rng, config, deterministic, context=None):
  del context
  logits = model.apply({"params": params}, batch["ids"], batch["target_mask"],
                       deterministic=deterministic, rngs={"dropout": rng})
  nll, weight = ar.token_nll(logits, batch["ids"], batch["target_mask"], batch["pad_mask"],
                             config.diffusion.loss_on_pad)
  return {"loss": nll, "nll": nll, "weight": weight}


def _ar_decoder(model, config, sampler, steps, clamp, eta, commit=False):
  """greedy, beam (``steps`` is the beam size) or sample (ancestral, ``eta`` is the softmax
  temperature: the decoder's noise scale, as DDIM's eta is a diffusion sampler's); ``nbest``, for
  ``Run.generate_nbest``: all ``steps`` beams, (B, K, L), best first."""
  del clamp, commit
  beam = max(int(steps or 1), 1) if sampler in ("beam", "nbest") else 1

  @jax.jit
  def decode(params, rng, ids_BxL, target_mask_BxL):
    if sampler == "sample":
      return ar.sample_decode(model, params, ids_BxL, target_mask_BxL, rng, float(eta))
    if sampler == "nbest" or beam > 1:
      return ar.beam_decode(model, params, ids_BxL, target_mask_BxL, beam,
                            alpha=config.sample.beam_alpha, nbest=sampler == "nbest")
    return ar.greedy_decode(model, params, ids_BxL, target_mask_BxL)

  return decode


FAMILIES = {
    "diffusion": Family(build=denoiser.DiffusionLM, init_params=denoiser.init_params,
                        loss_terms=_diffusion_terms, make_decoder=_diffusion_decoder,
                        decoders=tuple(sorted(samplers.SAMPLERS)), setup=_diffusion_setup,
                        setup_on_load=False),
    "ar": Family(build=ar.ARTransformer, init_params=ar.init_params, loss_terms=_ar_terms,
                 make_decoder=_ar_decoder, decoders=("beam", "greedy", "sample")),
    # attribute classifier on a diffusion run's noisy embeddings (classifier guidance); no decoder
    "classifier": Family(build=classifier.NoisyClassifier, init_params=classifier.init_params,
                         loss_terms=classifier.loss_terms, make_decoder=classifier.no_decoder,
                         decoders=("none",), setup=classifier.setup),
}


def tokenizer_file(config) -> str:
  """A saved tokenizer the run must use ('' = train one): a classifier reads its base run's, a
  step-distilled student its teacher's."""
  if config.model.family == "classifier" and config.classifier.base_run:
    return os.path.join(config.classifier.base_run, runs.TOKENIZER_FILE)
  if config.get("step_distill") and config.step_distill.teacher_run:
    return os.path.join(config.step_distill.teacher_run, runs.TOKENIZER_FILE)
  return ""


def family_of(config) -> Family:
  return FAMILIES[config.model.family]
