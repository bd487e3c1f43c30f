"""Word embeddings as the diffusion's data space: embed, round, clamp (Li et al. 2022, sec. 4.1-4.2).

The table ``emb_VxE`` is a parameter trained jointly with the denoiser. The rounding distribution
``p(w | x) = softmax(x . emb^T)`` uses tied logits; rounding to ids and the clamping trick use the
nearest embedding in L2, ``argmin_v ||x - emb_v||^2 = argmin_v (||emb_v||^2 - 2 x . emb_v)``.
"""
import jax.numpy as jnp
import optax

EMB_NORMS = ("none", "l2", "layernorm")


def normalize(emb_VxE, kind: str = "none", scale: float = 1.0):
  """The table as the model reads it (``model.emb_norm``): ``none`` as learned; ``l2`` every row
  at norm scale * sqrt(E) (CDCD, Dieleman et al. 2022); ``layernorm`` every row at zero mean and
  standard deviation ``scale``, no affine (Difformer, Gao et al. 2022). Both fix the per-coordinate
  RMS at ``scale``, so the embedding scale, which otherwise drifts with training and moves the noise
  schedule's effective signal-to-noise ratio, stays where it is put. A scale of 1/F is Difformer's
  noise factor F: q(x_t | x0) then sees F times the noise relative to the signal."""
  if kind == "none":
    return emb_VxE
  if kind == "l2":
    norm = jnp.sqrt(jnp.sum(emb_VxE**2, -1, keepdims=True) + 1e-12)
    return emb_VxE * (scale * jnp.sqrt(float(emb_VxE.shape[-1])) / norm)
  if kind == "layernorm":
    mean = jnp.mean(emb_VxE, -1, keepdims=True)
    var = jnp.mean((emb_VxE - mean) ** 2, -1, keepdims=True)
    return (emb_VxE - mean) * (scale / jnp.sqrt(var + 1e-6))
  raise ValueError(f"unknown emb_norm {kind!r}; choose one of {EMB_NORMS}")


def table(params, model_cfg):
  """The embedding table of a diffusion LM's ``params`` as the model reads it (``model_cfg``'s
  ``emb_norm`` and ``emb_scale``): every reader of the table (x0, rounding, clamping, guidance,
  likelihood) goes through this."""
  return normalize(jnp.asarray(params["embedding"]), model_cfg.emb_norm,
                   getattr(model_cfg, "emb_scale", 1.0))


def embed(emb_VxE, ids_BxL):
  return jnp.take(emb_VxE, ids_BxL, axis=0)


def rounding_logits(emb_VxE, x_BxLxE):
  """Tied-embedding logits of p(w | x): shape (B, L, V)."""
  return jnp.einsum("ble,ve->blv", x_BxLxE, emb_VxE)


def neg_sq_distance(emb_VxE, x_BxLxE):
  """-||x - emb_v||^2 up to the per-position constant ||x||^2, shape (B, L, V)."""
  return 2.0 * rounding_logits(emb_VxE, x_BxLxE) - jnp.sum(emb_VxE**2, axis=-1)


def round_to_ids(emb_VxE, x_BxLxE):
  """Nearest word id for each vector: shape (B, L), int32."""
  return jnp.argmax(neg_sq_distance(emb_VxE, x_BxLxE), axis=-1).astype(jnp.int32)


def clamp(emb_VxE, x_BxLxE):
  """The clamping trick: replace each vector by its nearest word embedding."""
  return embed(emb_VxE, round_to_ids(emb_VxE, x_BxLxE))


def nll_of(logits_XxV, ids_X):
  """-log softmax(logits)[id] over the last axis: shape of ``ids``.

  optax's ``logsumexp(logits) - logits[id]`` never materialises the (.., V) log-softmax; on this
  CPU, value and gradient of the `small` rounding term (64 x 64 x 8000) took 0.32 s against 0.71 s
  for ``take_along_axis(log_softmax(logits))``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_XxV, ids_X)


def token_nll(emb_VxE, x_BxLxE, ids_BxL):
  """-log p(w | x) under the tied rounding softmax, shape (B, L)."""
  return nll_of(rounding_logits(emb_VxE, x_BxLxE), ids_BxL)
