"""TrainState and its sharded creation (abstract init -> partition specs -> jit with out_shardings)."""
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from diffusion_text import denoiser, sharding


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray        # int32 scalar: number of optimizer updates applied
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jnp.ndarray         # raw uint32 PRNG key; per-step keys are folded in with ``step``


def _init_boxed(init_params: Callable, model_cfg: denoiser.ModelConfig,
                tx: optax.GradientTransformation, rng):
  rng_params, rng_state = jax.random.split(rng)
  params = init_params(model_cfg, rng_params)
  # optax maps over the boxes, so optimizer moments inherit the parameters' logical axes.
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=tx.init(params), rng=rng_state)


def state_shardings(init_params, model_cfg, tx, mesh, rules):
  """(abstract unboxed TrainState of ShapeDtypeStructs with shardings, TrainState of shardings).

  ``init_params(model_cfg, rng)`` returns the family's logically partitioned params.
  """
  abstract_boxed = jax.eval_shape(lambda r: _init_boxed(init_params, model_cfg, tx, r),
                                  jax.random.PRNGKey(0))
  shardings = sharding.logical_to_shardings(abstract_boxed, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(abstract_boxed), shardings)
  return abstract, shardings


def create_train_state(init_params, model_cfg, tx, mesh, rules, seed: int):
  """A freshly initialised TrainState laid out on ``mesh``; returns (state, shardings)."""
  _, shardings = state_shardings(init_params, model_cfg, tx, mesh, rules)
  init = jax.jit(lambda r: nn.meta.unbox(_init_boxed(init_params, model_cfg, tx, r)),
                 out_shardings=shardings)
  return init(jax.random.PRNGKey(seed)), shardings


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
