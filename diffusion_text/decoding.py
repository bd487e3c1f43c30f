"""The one diffusion decoding path: packed ids in, packed ids out.

Every caller that turns noise (or a noised input) into words goes through ``decode_ids``: a family's
decoder (evaluation, ``Run.generate``), guided and classifier-free guided generation (the control
tasks, through ``make_decoder``) and the recovery diagnostic (``recovery.recovery``), so all of them
read the same normalised table and round the same way. It takes the guidance terms, a
classifier-free guidance scale, a timestep grid and a start state; ``control`` holds the terms
and the inputs (infilling, length).

Rounding: a model with word logits (``x0_head="softmax"`` or ``logits_head="full"``) names each word
by the argmax of its own logits at t = 1 on the final vectors; a model without them rounds to the
nearest embedding (Li et al. 2022, sec. 4.2).
"""
import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffusion_text import batching, denoiser, embeddings, losses, process, samplers


# sampling settings a run's config holds beyond the sampler's arguments (``sample.<name>``), with
# the values that leave the plain sampler unchanged
DIALS = {"score_temp": 1.0, "logit_temp": 1.0, "grid_power": 1.0, "rounding": "model",
         "slot_guidance": 0.0, "cfg_scale": 1.0}
ROUNDINGS = ("model", "nearest")


def dials(sample_config) -> dict:
  """The ``DIALS`` of a config's ``sample`` section, the default where a config (an older run)
  lacks one."""
  return {k: type(v)(sample_config.get(k, v)) for k, v in DIALS.items()}


def dial_kwargs(sample_config, diffusion: process.Diffusion, steps) -> dict:
  """``decode_ids`` keyword arguments of the config's dials: the temperatures, the rounding, and the
  timestep grid: a distilled student's own (``sample.grid``, which takes only its step count), or
  that of ``grid_power`` (None, the evenly spaced grid of ``steps``, at 1)."""
  d = dials(sample_config)
  T = diffusion.num_steps
  own = list(sample_config.get("grid", []))
  if own and steps and steps != len(own) - 1:
    raise ValueError(f"this run samples on its distilled grid of {len(own) - 1} steps "
                     f"(sample.grid); got steps={steps}")
  if own:
    grid = np.asarray(own, np.int32)
  else:
    grid = None if d["grid_power"] == 1.0 else process.timestep_grid(T, steps or T, d["grid_power"])
  return {"score_temp": d["score_temp"], "logit_temp": d["logit_temp"], "grid": grid,
          "rounding": d["rounding"]}


def has_logits(config) -> bool:
  return config.model.x0_head == "softmax" or config.model.logits_head == "full"


def denoiser_of(model, params, *, logit_temp: float = 1.0, emb_VxE=None, **kw) -> Callable:
  """``(z_t, t, x_sc) -> x0_hat`` of a diffusion LM's (EMA) parameters, deterministic (``kw``: the
  model's call options, an encoded source as ``memory``).

  ``logit_temp`` (a softmax x0 head only): the estimate is read from the word logits divided by it,
  ``softmax(logits / logit_temp) EMB`` with ``emb_VxE`` the table as read: below 1 each position's
  estimate moves toward its most likely word (toward 0: that word's embedding), above 1 toward the
  mean of the words. 1 is the model's own estimate."""
  if logit_temp == 1.0:
    return lambda z, t, x_sc: model.apply({"params": params}, z, t, x_sc, deterministic=True, **kw)
  if not logit_temp > 0:
    raise ValueError(f"logit_temp must be > 0, got {logit_temp}")
  if model.cfg.x0_head != "softmax" or emb_VxE is None:
    raise ValueError("logit_temp needs a softmax x0 head (model.x0_head=softmax) and its table")

  def tempered(z, t, x_sc):
    _, logits = model.apply({"params": params}, z, t, x_sc, deterministic=True,
                            return_logits=True, **kw)
    return jnp.einsum("blv,ve->ble", jax.nn.softmax(logits / logit_temp, -1), emb_VxE)
  return tempered


def round_ids(model, params, config, x0_BxLxE, ids_BxL, target_mask_BxL, *,
              rounding: str = "model", **kw):
  """Word ids of the final vectors at mask-1 positions; the others keep ``ids``.

  ``rounding="model"``: a model with word logits names each word by the argmax of its logits at
  t = 1 on the final vectors (one more denoiser call; ``kw``: its call options, an encoded source as
  ``memory``); ``"nearest"``, and any model without logits: the nearest embedding."""
  if rounding not in ROUNDINGS:
    raise ValueError(f"unknown rounding {rounding!r}; use one of {ROUNDINGS}")
  if has_logits(config) and rounding == "model":
    t_B = jnp.ones((x0_BxLxE.shape[0],), jnp.int32)
    _, logits = model.apply({"params": params}, x0_BxLxE, t_B, x0_BxLxE, deterministic=True,
                            return_logits=True, **kw)
    new = jnp.argmax(logits, -1).astype(jnp.int32)
  else:
    new = embeddings.round_to_ids(embeddings.table(params, config.model), x0_BxLxE)
  return jnp.where(target_mask_BxL > 0, new, ids_BxL)


# ------------------------------------------------------------------------------ guidance

@dataclasses.dataclass(frozen=True)
class Guidance:
  """Guidance terms (``control.Term``) and the ascent that follows them (Li et al. 2022, sec. 5.2;
  ``control``'s docstring)."""
  terms: tuple = ()
  num_steps: int = 3  # K gradient steps per sampler step
  step_size: float = 0.1  # Adagrad learning rate
  fluency_weight: float = 0.01  # lambda: weight of log q(x | proposal)


def score(terms: Sequence[Any], x_BxLxE, t_B, args: Sequence[Any], logits_fn=None):
  """Weighted sum of the terms, (B,); ``logits_fn`` for the terms that read the model."""
  total = jnp.zeros(x_BxLxE.shape[:1], jnp.float32)
  for term, a in zip(terms, args):
    if getattr(term, "reads_model", False):
      if logits_fn is None:
        raise ValueError(f"guidance term {term.name!r} reads the model's word logits: pass "
                         "logits_fn")
      value = term.fn(x_BxLxE, t_B, a, logits_fn)
    else:
      value = term.fn(x_BxLxE, t_B, a)
    total = total + term.weight * value
  return total


def make_guide_fn(guidance: Guidance, diffusion: process.Diffusion, args: Sequence[Any],
                  logits_fn: Optional[Callable] = None):
  """The ``guide_fn(x_s, t, s)`` hook of ``samplers.sample`` for these terms and per-row ``args``
  (``logits_fn(x, t_B)``: the guided model's word logits, for terms that read them)."""
  ab = diffusion.alpha_bar
  floor = 1.0 - ab[1]
  opt = optax.adagrad(guidance.step_size)

  def guide(x_s, t, s):
    _, _, var = process.posterior_coefficients(ab[t], ab[s])
    v = jnp.maximum(var, floor)
    s_B = jnp.full(x_s.shape[:1], s, jnp.int32)

    def objective(x):
      fluency = jnp.sum((x - x_s) ** 2) / (2.0 * v)
      return (jnp.sum(score(guidance.terms, x, s_B, args, logits_fn))
              - guidance.fluency_weight * fluency)

    x, state = x_s, opt.init(x_s)
    for _ in range(guidance.num_steps):
      g = jax.grad(objective)(x)
      updates, state = opt.update(jax.tree_util.tree_map(jnp.negative, g), state)  # ascend
      x = optax.apply_updates(x, updates)
    return x

  return guide


# ------------------------------------------------------------------------- classifier-free guidance

def cfg_denoiser(denoise_fn: Callable, emb_VxE, ids_BxL, target_mask_BxL, scale: float):
  """Classifier-free guided ``denoise_fn(z, t, x_sc)`` for packed seq2seq rows (one 2B batch).

  The null branch sees the null condition at every source position of both its inputs: the noisy
  state and the self-conditioning estimate (which the sampler re-anchors to the real source), as in
  training, where condition dropout replaces the source before the first estimate is made."""
  x_null = embeddings.embed(emb_VxE, losses.null_source(ids_BxL, target_mask_BxL))

  def f(z, t_B, x_sc):
    z_null = process.apply_mask(z, x_null, target_mask_BxL)
    x_sc_null = process.apply_mask(x_sc, x_null, target_mask_BxL)
    both = denoise_fn(jnp.concatenate([z, z_null]), jnp.concatenate([t_B, t_B]),
                      jnp.concatenate([x_sc, x_sc_null]))
    x_c, x_u = jnp.split(both, 2)
    return x_u + scale * (x_c - x_u)
  return f


def decode_ids(model, params, config, diffusion: process.Diffusion, rng, ids_BxL, target_mask_BxL,
               *, sampler: str = "ddpm", steps: Optional[int] = None, clamp: bool = False,
               eta: float = 0.0, guidance: Optional["Guidance"] = None, term_args: Sequence = (),
               cfg_scale: Optional[float] = None, grid=None, x_init_BxLxE=None,
               commit: bool = False, score_temp: float = 1.0, logit_temp: float = 1.0,
               rounding: str = "model"):
  """Samples the mask-1 positions of packed ``ids`` (the others are held at their embeddings: a
  seq2seq source, infilling context) and rounds them to words. Traceable; callers jit it.

  ``guidance``: its terms (with one per-row pytree of ``term_args`` each) steer every sampler step
  (``make_guide_fn``); ``cfg_scale``: classifier-free guidance (``cfg_denoiser``); ``grid``: the
  timesteps to visit (default: ``steps`` evenly spaced); ``x_init_BxLxE``: the start state (default:
  Gaussian noise at T); ``commit``: fix the words a group per step; ``score_temp``: the score
  temperature (both ``samplers.sample``); ``logit_temp``: the softmax head's logit temperature
  (``denoiser_of``); ``rounding``: how the final vectors become words (``round_ids``).
  """
  emb = embeddings.table(params, config.model)
  x_cond = embeddings.embed(emb, ids_BxL)
  src_len = getattr(getattr(model, "cfg", None), "src_len", 0)
  kw = {}
  if src_len and cfg_scale is None:  # the encoder-decoder's source is held fixed: encode it once
    kw["memory"] = denoiser.encode_source(model.cfg, params, x_cond[:, :src_len])
  denoise = denoiser_of(model, params, logit_temp=logit_temp, emb_VxE=emb, **kw)
  if cfg_scale is not None:
    denoise = cfg_denoiser(denoise, emb, ids_BxL, target_mask_BxL, cfg_scale)
  guide_fn = None
  if guidance and guidance.terms:
    guide_fn = make_guide_fn(guidance, diffusion, term_args,
                             _logits_fn(model, params, config, guidance, kw))
  x0 = samplers.sample(denoise, emb, diffusion, rng, shape=x_cond.shape, steps=steps or None,
                       sampler=sampler, clamp=clamp, eta=eta, x_cond_BxLxE=x_cond,
                       mask_BxL=target_mask_BxL, guide_fn=guide_fn, grid=grid,
                       x_init_BxLxE=x_init_BxLxE, commit=commit, score_temp=score_temp)
  return round_ids(model, params, config, x0, ids_BxL, target_mask_BxL, rounding=rounding, **kw)


def _logits_fn(model, params, config, guidance: Guidance, kw: dict) -> Optional[Callable]:
  """``(x, t_B) -> word logits`` of the model (no self-conditioning input) when a guidance term
  reads them."""
  if not any(getattr(term, "reads_model", False) for term in guidance.terms):
    return None
  if not has_logits(config):
    raise ValueError("this guidance reads the model's word logits: the run needs a softmax x0 "
                     "head or full logits (model.x0_head=softmax or model.logits_head=full)")

  def logits(x, t_B):
    return model.apply({"params": params}, x, t_B, jnp.zeros_like(x), deterministic=True,
                       return_logits=True, **kw)[1]
  return logits


def one_step_ids(model, params, config, z_BxLxE, t_B):
  """The words one denoiser call reads from ``z_t`` with no self-conditioning input: the argmax of
  its logits, or the nearest embedding to x0_hat for a model without logits. Traceable."""
  x_sc = jnp.zeros_like(z_BxLxE)
  if has_logits(config):
    _, logits = model.apply({"params": params}, z_BxLxE, t_B, x_sc, deterministic=True,
                            return_logits=True)
    return jnp.argmax(logits, -1).astype(jnp.int32)
  x0_hat = model.apply({"params": params}, z_BxLxE, t_B, x_sc, deterministic=True)
  return embeddings.round_to_ids(embeddings.table(params, config.model), x0_hat)


ACCURACY_T_FRACTIONS = (0.5, 0.75, 0.9, 0.95, 1.0)


def one_step_accuracy(model, params, config, diffusion: process.Diffusion, rng, ids_BxL,
                      target_mask_BxL, pad_mask_BxL, t_fractions=ACCURACY_T_FRACTIONS) -> dict:
  """``{"token_acc_t<t>": (correct, words)}`` sums: how often one denoiser call on
  x_t ~ q(x_t | x0) names the clean word (argmax of its logits, or the nearest embedding to x0_hat
  for a model without logits), over non-PAD target positions, at t = fraction * T. The band where
  this accuracy is 0.1-0.3 is where a sentence's plan gets made; a model that reads no word at
  t = T starts sampling from a blank. Traceable; callers jit it."""
  emb = embeddings.table(params, config.model)
  x0 = embeddings.embed(emb, ids_BxL)
  words = (target_mask_BxL > 0) & (pad_mask_BxL == 0)
  T = diffusion.num_steps
  out = {}
  for i, frac in enumerate(t_fractions):
    t = max(1, int(round(frac * T)))
    eps = jax.random.normal(jax.random.fold_in(rng, i), x0.shape)
    t_B = jnp.full((ids_BxL.shape[0],), t, jnp.int32)
    z = process.q_sample(x0, diffusion.alpha_bar[t_B], eps, target_mask_BxL)
    pred = one_step_ids(model, params, config, z, t_B)
    out[f"token_acc_t{t}"] = (jnp.sum((pred == ids_BxL) & words), jnp.sum(words))
  return out


# ------------------------------------------------------------------------------ runs

def require_null_model(config, cfg_scale: Optional[float], what: str = "the run") -> None:
  """Classifier-free guidance (``cfg_scale`` not None) needs a run trained with condition dropout."""
  if cfg_scale is not None and config.diffusion.cond_drop_prob <= 0:
    raise ValueError(f"{what} was not trained with condition dropout "
                     "(diffusion.cond_drop_prob = 0): classifier-free guidance has no null model")


def make_decoder(run, *, guidance: Optional[Guidance] = None, cfg_scale: Optional[float] = None,
                 sampler: str = "ddpm", steps: Optional[int] = None, clamp: bool = False,
                 eta: float = 0.0):
  """Jitted ``(rng, ids_BxL, mask_BxL, term_args) -> ids_BxL`` for a diffusion ``run``: mask-1
  positions generated (guided by ``guidance`` and/or classifier-free ``cfg_scale``), the others held
  at ``ids``. ``term_args`` is a tuple with one per-row pytree per guidance term. The run's
  ``sample.score_temp``, ``sample.logit_temp`` and ``sample.grid_power`` apply, as in its own
  decoder."""
  if run.config.model.family != "diffusion":
    raise ValueError("guidance needs a diffusion run")
  require_null_model(run.config, cfg_scale, run.workdir)
  diffusion, model, params = run.diffusion, run.model, run.params
  kwargs = dial_kwargs(run.config.sample, diffusion, steps)

  @jax.jit
  def decode(rng, ids_BxL, mask_BxL, term_args):
    return decode_ids(model, params, run.config, diffusion, rng, ids_BxL, mask_BxL,
                      sampler=sampler, steps=steps, clamp=clamp, eta=eta, guidance=guidance,
                      term_args=term_args, cfg_scale=cfg_scale, **kwargs)

  return decode


def generate_ids(decode, ids_NxL, mask_NxL, term_args=(), *, batch_size: int = 64, seed: int = 0):
  """Runs ``decode`` over N rows in batches (the last one padded to keep one compiled shape)."""
  batch_size = min(batch_size, len(ids_NxL))
  leaves, treedef = jax.tree_util.tree_flatten(term_args)
  out = []
  for start, n, (ids, mask, *args) in batching.padded_batches(batch_size, ids_NxL, mask_NxL,
                                                              *leaves):
    args = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in args])
    out.append(np.asarray(decode(jax.random.fold_in(jax.random.PRNGKey(seed), start // batch_size),
                                 jnp.asarray(ids), jnp.asarray(mask), args))[:n])
  return np.concatenate(out)
