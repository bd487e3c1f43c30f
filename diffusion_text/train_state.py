"""TrainState and its sharded creation (abstract init -> partition specs -> jit with out_shardings),
and its restore: whole for training, the EMA parameters alone for sampling."""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from diffusion_text import denoiser, losses, sharding


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray        # int32 scalar: number of optimizer updates applied
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jnp.ndarray         # raw uint32 PRNG key; per-step keys are folded in with ``step``


@flax.struct.dataclass
class LossAwareTrainState(TrainState):
  """The state of a run with ``diffusion.t_sampler=loss_aware|warped``: also the sampler's per-t loss
  history (``losses.loss_aware_init``), replicated. A subclass, so that checkpoints of every other
  run keep the layout they always had."""
  t_stats: Any = None


def _init_boxed(init_params: Callable, model_cfg: denoiser.ModelConfig,
                tx: optax.GradientTransformation, rng, t_stats: Callable | None = None):
  rng_params, rng_state = jax.random.split(rng)
  params = init_params(model_cfg, rng_params)
  # optax maps over the boxes, so optimizer moments inherit the parameters' logical axes.
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                opt_state=tx.init(params), rng=rng_state)
  if t_stats:
    return LossAwareTrainState(**fields, t_stats=t_stats())
  return TrainState(**fields)


def t_stats_of(config) -> Callable | None:
  """The initialiser of ``LossAwareTrainState.t_stats`` if the config asks for one, else None."""
  if config.model.family == "diffusion" and config.diffusion.get("t_sampler") in losses.T_SAMPLER_PROBS:
    return lambda: losses.loss_aware_init(config.diffusion.num_steps)
  return None


def state_shardings(init_params, model_cfg, tx, mesh, rules, t_stats=None):
  """(abstract unboxed TrainState of ShapeDtypeStructs with shardings, TrainState of shardings).

  ``init_params(model_cfg, rng)`` returns the family's logically partitioned params; ``t_stats``
  (``t_stats_of(config)``) adds the t sampler's state, replicated.
  """
  abstract_boxed = jax.eval_shape(lambda r: _init_boxed(init_params, model_cfg, tx, r, t_stats),
                                  jax.random.PRNGKey(0))
  shardings = sharding.logical_to_shardings(abstract_boxed, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(abstract_boxed), shardings)
  return abstract, shardings


def create_train_state(init_params, model_cfg, tx, mesh, rules, seed: int, t_stats=None):
  """A freshly initialised TrainState laid out on ``mesh``; returns (state, shardings)."""
  _, shardings = state_shardings(init_params, model_cfg, tx, mesh, rules, t_stats)
  init = jax.jit(lambda r: nn.meta.unbox(_init_boxed(init_params, model_cfg, tx, r, t_stats)),
                 out_shardings=shardings)
  return init(jax.random.PRNGKey(seed)), shardings


def start_from(state: TrainState, params) -> TrainState:
  """``state`` with its parameters and their EMA replaced by ``params`` (same tree), laid out as
  the state's own."""
  put = lambda cur, new: jax.device_put(jnp.array(new, cur.dtype), cur.sharding)
  # two copies: the train step donates the state, and a buffer may be donated once
  return state.replace(params=jax.tree.map(put, state.params, params),
                       ema_params=jax.tree.map(put, state.ema_params, params))


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def restore_ema_params(ckpt, step: int, init_params, model_cfg, mesh, rules):
  """The EMA parameters of checkpoint ``step`` alone, for sampling: the optimizer state is not read.
  Laid out on ``mesh`` with the blocks as ``model_cfg.scan_layers`` says, whichever layout the
  checkpoint was written in (``denoiser.convert_layout``, exact)."""
  stored = denoiser.scan_layers_of((ckpt.stored_tree(step) or {}).get("params"))
  stored_cfg = model_cfg if stored is None else dataclasses.replace(model_cfg, scan_layers=stored)

  def abstract_of(cfg):
    boxed = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
    shardings = sharding.logical_to_shardings(boxed, mesh, rules)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        nn.meta.unbox(boxed), shardings), shardings

  abstract, _ = abstract_of(stored_cfg)
  ema = ckpt.restore_part(step, {"ema_params": abstract})["ema_params"]
  if stored_cfg.scan_layers == model_cfg.scan_layers:
    return ema
  _, shardings = abstract_of(model_cfg)
  return jax.device_put(denoiser.convert_layout(ema, model_cfg.scan_layers, model_cfg.num_layers),
                        shardings)


def restore_in_layout(ckpt, step: int, init_params, model_cfg, tx, mesh, rules, t_stats=None):
  """(state, data_state) of checkpoint ``step`` laid out on ``mesh`` for ``model_cfg``, with the
  blocks scanned or unrolled as ``model_cfg.scan_layers`` says, whichever layout the checkpoint was
  written in (converted exactly, ``denoiser.convert_layout``, parameters, EMA and Adam moments)."""
  abstract, shardings = state_shardings(init_params, model_cfg, tx, mesh, rules, t_stats)
  stored = denoiser.scan_layers_of((ckpt.stored_tree(step) or {}).get("params"))
  if stored is None or stored == model_cfg.scan_layers:
    return ckpt.restore(step, abstract)
  stored_cfg = dataclasses.replace(model_cfg, scan_layers=stored)
  stored_abstract, _ = state_shardings(init_params, stored_cfg, tx, mesh, rules, t_stats)
  state, data_state = ckpt.restore(step, stored_abstract)
  state = denoiser.convert_layout(state, model_cfg.scan_layers, model_cfg.num_layers)
  return jax.device_put(state, shardings), data_state
