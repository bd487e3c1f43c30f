"""The language bench: train a small model on a synthetic language (``languages.py``), sample it, and
score the samples exactly.

An arm is a set of config overrides (``ARMS``) on ``configs/langbench.py``; ``run_arm`` trains it on
``num_train`` sentences of a language with the package's own train step, draws ``num_samples``
sequences with the configured sampler and returns one row of the bench (``languages.score`` plus
what was run). Everything runs in memory on one mesh: an arm takes a minute or two on two CPU cores.

Sequences are ``[BOS] words [EOS] PAD ...`` of ``data.max_len`` (about 65% PAD at 32, like E2E at 64),
or, with ``data.pack_blocks``, the training sentences joined as ``[BOS] s1 [EOS] [BOS] s2 [EOS] ...``
and cut into blocks of ``data.max_len`` with no PAD (Diffusion-LM's ``padding_mode block``); a
sampled block is then scored on its complete sentences (between a BOS and the next EOS).
"""
import json
import logging
import math
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffusion_text import configuration, defaults, families, languages, optim, sharding, train
from diffusion_text import train_state as ts
from diffusion_text.data import packing, tokenizers
from diffusion_text.data.tokenizers import BOS, EOS, PAD
from diffusion_text.errors import ConfigError, NumericsError

BAD = "<bad>"  # a sampled sequence that is not one well-formed sentence scores as this word

# arm name -> config overrides (dotted keys) on configs/langbench.py
ARMS = {
    "base": {},
    "ar": {"model.family": "ar", "sample.sampler": "sample", "sample.eta": 1.0,
           "eval.sampler": "greedy"},  # not read by the bench; the AR family rejects 'ddim'
    "clamp": {"sample.clamp": True},
    "ddpm2000_clamp": {"sample.steps": 2000, "sample.clamp": True},
    "ddim": {"sample.sampler": "ddim"},
    "dpm20": {"sample.sampler": "dpm++2m", "sample.steps": 20},
    "commit": {"sample.commit": True},
    "score_temp09": {"sample.score_temp": 0.9},
    "score_temp09_clamp": {"sample.score_temp": 0.9, "sample.clamp": True},
    "blocks": {"data.pack_blocks": True},
    "self_cond": {"model.self_cond": True},
    "softmax_ce": {"model.x0_head": "softmax", "diffusion.ce_weight": 1.0},
    "t_power": {"diffusion.t_power": 0.5},
    "warped": {"diffusion.t_sampler": "warped"},
    "cosine": {"diffusion.schedule": "cosine"},
    "emb64": {"model.emb_dim": 64},
    "emb_l2": {"model.emb_norm": "l2"},
    "rope": {"model.rope": True},
    "steps4x": {"train.num_train_steps": 8000},
}
_CE = {"model.x0_head": "softmax", "diffusion.ce_weight": 1.0}
_ROPE_CE = {"model.rope": True, **_CE}
ARMS.update({  # combinations of the single levers that moved the grammar
    "rope_ce": _ROPE_CE,
    "rope_ce_clamp": {**_ROPE_CE, "sample.clamp": True},
    "rope_ce_st09": {**_ROPE_CE, "sample.score_temp": 0.9},
    "rope_ce_sc": {**_ROPE_CE, "model.self_cond": True},
    "rope_ce_sc_4x": {**_ROPE_CE, "model.self_cond": True, "train.num_train_steps": 8000},
    "rope_ce_sc_blocks": {**_ROPE_CE, "model.self_cond": True, "data.pack_blocks": True},
    # the softmax head's estimate read from logits / 0.5 or / 0.3 at sampling (sample.logit_temp)
    "rope_ce_sc_lt05": {**_ROPE_CE, "model.self_cond": True, "sample.logit_temp": 0.5},
    "rope_ce_sc_lt03": {**_ROPE_CE, "model.self_cond": True, "sample.logit_temp": 0.3},
    # Difformer's noise factor (the recipe's seq2seq lever): unit-RMS rows scaled by 1/4 or 1/8,
    # so the same schedule hides the words at lower t
    "rope_ce_sc_nf4": {**_ROPE_CE, "model.self_cond": True, "model.emb_norm": "l2",
                       "model.emb_scale": 0.25},
    "rope_ce_sc_nf8": {**_ROPE_CE, "model.self_cond": True, "model.emb_norm": "l2",
                       "model.emb_scale": 0.125},
    # TEncDM's tan-d schedule (the cosine schedule's signal-to-noise ratio / 81), and tan-1 (the
    # cosine schedule) to tell the schedule's shape from its shift
    "rope_ce_sc_tan9": {**_ROPE_CE, "model.self_cond": True, "diffusion.schedule": "tan-9"},
    "rope_ce_sc_tan1": {**_ROPE_CE, "model.self_cond": True, "diffusion.schedule": "tan-1"},
    # the loss-variance schedule: t drawn in proportion to each level's RMS loss, importance-weighted
    # (Nichol & Dhariwal 2021; DiffuSeq's sampler; Plaid's aim, without its learned curve)
    "rope_ce_sc_la": {**_ROPE_CE, "model.self_cond": True, "diffusion.t_sampler": "loss_aware"},
    "rope_ce_sc_emb128": {**_ROPE_CE, "model.self_cond": True, "model.emb_dim": 128},
    # batch 640 for 800 steps: the sentences (512,000) and about the compute of rope_ce_sc_4x
    "rope_ce_sc_b640": {**_ROPE_CE, "model.self_cond": True, "train.batch_size": 640,
                        "train.num_train_steps": 800},
    # the 8,000-step model read at logit temperature 0.7 or 0.5
    "rope_ce_sc_4x_lt07": {**_ROPE_CE, "model.self_cond": True, "train.num_train_steps": 8000,
                           "sample.logit_temp": 0.7},
    "rope_ce_sc_4x_lt05": {**_ROPE_CE, "model.self_cond": True, "train.num_train_steps": 8000,
                           "sample.logit_temp": 0.5},
})


def config_for(base: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(base.to_dict())
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"unknown config key {key!r}")
    node[leaf] = value
  return c


def tokenizer_of(lang: languages.Language) -> tokenizers.WordTokenizer:
  return tokenizers.WordTokenizer(list(lang.words))


def encode(tok, sents, max_len: int, pack_blocks: bool) -> np.ndarray:
  """(N, max_len) int32 training sequences: one padded sentence per row, or packed blocks."""
  if not pack_blocks:
    return np.stack([tok.encode_padded(" ".join(s), max_len) for s in sents]).astype(np.int32)
  return packing.pack_blocks([tok.encode(" ".join(s)) for s in sents], max_len)


def sentences_of(tok, ids_NxL: np.ndarray, pack_blocks: bool) -> list:
  """Word lists of sampled sequences. Padded form: a row is ``[BOS] words [EOS] PAD*`` or it is
  ``[BAD]``. Blocks: every complete ``[BOS] words [EOS]`` span of every row (a span holding a
  special token is ``[BAD]``)."""
  out = []
  for row in np.asarray(ids_NxL).tolist():
    if pack_blocks:
      out += [_words(tok, span) for span in packing.split_blocks(row)]
      continue
    end = row.index(EOS) if EOS in row else None
    if row[0] != BOS or end is None or any(i != PAD for i in row[end + 1:]):
      out.append([BAD])
    else:
      out.append(_words(tok, row[1:end]))
  return out


def _words(tok, ids) -> list:
  if any(i < len(tokenizers.SPECIALS) for i in ids):
    return [BAD]
  return tok.decode_ids(ids).split()


def train_params(config, vocab_size: int, ids_NxL: np.ndarray, log_every: int = 0):
  """Trains ``config`` on rows of ``ids_NxL`` (uniformly drawn batches, seeded); returns
  (model, EMA params, seconds)."""
  model_cfg = families.model_config(config, vocab_size)
  family = families.family_of(config)
  model = family.build(model_cfg)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  rules = sharding.axis_rules(config)
  num_steps = config.train.num_train_steps
  tx = optim.make_optimizer(config.optim, num_steps)
  rng = np.random.default_rng(config.seed)
  B = config.train.batch_size
  with sharding.mesh_context(mesh, rules):
    state, shardings = ts.create_train_state(family.init_params, model_cfg, tx, mesh, rules,
                                             config.seed, t_stats=ts.t_stats_of(config))
    step_fn = jax.jit(train.make_train_step(model, config, tx), donate_argnums=0)
    start = time.time()
    for step in range(1, num_steps + 1):
      ids = ids_NxL[rng.integers(len(ids_NxL), size=B)]
      batch = {"ids": ids, "target_mask": np.ones_like(ids), "pad_mask": (ids == PAD).astype(
          np.int32)}
      state, sums = step_fn(state, batch)
      if log_every and (step % log_every == 0 or step == num_steps):
        loss = float(sums["loss"]) / max(float(sums["count"]), 1.0)
        if not math.isfinite(loss):
          raise NumericsError(f"non-finite loss at step {step}")
        logging.info("step %d/%d loss %.4f (%.0fs)", step, num_steps, loss, time.time() - start)
    jax.block_until_ready(state.ema_params)
  return model, state.ema_params, time.time() - start


def sample_ids(config, model, params, num: int, seed: int) -> np.ndarray:
  """``num`` sampled sequences with ``config.sample``'s sampler. The AR family starts from a given
  BOS; the diffusion family generates every position, as it is trained to."""
  s = config.sample
  decode = families.family_of(config).make_decoder(model, config, s.sampler, s.steps, s.clamp,
                                                   s.eta, commit=s.commit)
  L = config.data.max_len
  out = []
  for k in range(0, num, s.batch_size):
    ids = np.zeros((s.batch_size, L), np.int32)
    mask = np.ones((s.batch_size, L), np.int32)
    if config.model.family == "ar":
      ids[:, 0], mask[:, 0] = BOS, 0
    out.append(np.asarray(decode(params, jax.random.PRNGKey(seed + k), jnp.asarray(ids),
                                 jnp.asarray(mask))))
  return np.concatenate(out)[:num]


# (language, num_train, training config) -> (model, EMA params, train seconds): arms that differ
# only in ``sample.*`` sample one trained model
_TRAINED: dict = {}


def _trained(config, language: str, num_train: int, vocab_size: int, make_ids, log_every: int):
  key = (language, num_train, json.dumps({k: v for k, v in config.to_dict().items()
                                          if k != "sample"}, sort_keys=True))
  if key not in _TRAINED:
    _TRAINED.clear()  # one model at a time in memory
    _TRAINED[key] = train_params(config, vocab_size, make_ids(), log_every)
  return _TRAINED[key]


def run_arm(language: str, arm: str, base: ml_collections.ConfigDict, *, num_train: int,
            num_samples: int, overrides: Optional[dict] = None, log_every: int = 0):
  """One bench row (dict) and the sampled texts (list of str) of ``arm`` on ``language``. Run arms
  that share a training config one after another: the model is trained once."""
  if arm not in ARMS and overrides is None:
    raise ConfigError(f"unknown arm {arm!r}; choose from {sorted(ARMS)}")
  overrides = dict(ARMS.get(arm, {}), **(overrides or {}))
  config = config_for(base, overrides)
  configuration.validate(config, defaults.get_config())  # bad values fail before any training
  lang = languages.get(language)
  tok = tokenizer_of(lang)
  pack = config.data.pack_blocks
  if not pack and lang.max_words + 2 > config.data.max_len:
    raise ConfigError(f"{language} sentences reach {lang.max_words + 2} tokens; data.max_len is "
                     f"{config.data.max_len}")
  rng = np.random.default_rng(config.seed)
  train_sents = lang.sample(rng, num_train)
  real = lang.sample(np.random.default_rng(config.seed + 1), num_samples)
  model, params, seconds = _trained(
      config, language, num_train, tok.vocab_size,
      lambda: encode(tok, train_sents, config.data.max_len, pack), log_every)
  start = time.time()
  sampled = sample_ids(config, model, params, num_samples, config.seed + 2)
  sample_seconds = time.time() - start
  sents = sentences_of(tok, sampled, pack)
  row = {"language": language, "family": config.model.family, "arm": arm,
         **languages.score(lang, sents, real),
         "train_steps": config.train.num_train_steps, "train_seconds": round(seconds, 1),
         "sample_seconds": round(sample_seconds, 1), "num_train": num_train,
         "sequences_sampled": num_samples, "overrides": overrides,
         "sampling": {k: config.sample[k] for k in ("sampler", "steps", "clamp", "eta", "commit",
                                                     "score_temp", "logit_temp",
                                                     "grid_power")},
         "model": {k: config.model[k] for k in ("width", "num_layers", "emb_dim", "self_cond",
                                                 "x0_head", "rope", "emb_norm",
                                                 "emb_scale")},
         "diffusion": {k: config.diffusion[k] for k in ("schedule", "num_steps", "t_power",
                                                         "t_sampler", "ce_weight")},
         "batch_size": config.train.batch_size, "max_len": config.data.max_len,
         "pack_blocks": pack, "seed": config.seed}
  return row, [" ".join(s) for s in sents]
