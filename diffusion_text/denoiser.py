"""The denoiser: a bidirectional Transformer mapping (x_t, t) to x0_hat (Li et al. 2022, sec. 4).

Input projection E -> D (2E -> D with self-conditioning: [z_t; x0_prev]), learned positions, a
sinusoidal timestep embedding through an MLP added to every position, ``num_layers`` pre-LayerNorm
blocks (optionally one ``nn.scan`` over layers, which keeps compile time independent of depth), final
LayerNorm and output projection D -> E.

Every parameter carries logical axis names (``vocab, latent, embed, mlp, heads, kv, layers``) that the
config's rules map onto mesh axes (see ``sharding.py``); the residual stream is constrained to
``(act_batch, act_len, act_emb)`` after the input and after every block.

Why Linen and not NNX: training is a pure function of a params pytree (jit with explicit shardings,
donation, orbax, EMA as a tree_map), which Linen gives directly; ``nn.scan`` with partition metadata
gives a depth-independent compile; both are what the issue's sharding work builds on.
"""
from collections.abc import Mapping
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffusion_text import embeddings, sharding


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  max_len: int
  emb_dim: int = 16
  width: int = 128
  num_layers: int = 2
  num_heads: int = 2
  mlp_dim: int = 512
  dropout: float = 0.1
  emb_init_std: float = 1.0
  scan_layers: bool = True
  dtype: str = "float32"
  self_cond: bool = False  # the denoiser also reads the previous x0 estimate (Chen et al. 2022)
  absorbing: bool = False  # a learned soft absorbing embedding (DiffuSeq-v2), params["absorbing"]
  num_labels: int = 0  # classifiers: output classes (0 = one per vocabulary word)
  x0_head: str = "linear"  # linear: x0_hat = the output vector | softmax: E[EMB(w)] under p(w | output)
  emb_norm: str = "none"  # none | l2 | layernorm: how the embedding table is normalised when read
  emb_scale: float = 1.0  # with emb_norm: the per-coordinate RMS of the rows
  logits_head: str = "tied"  # tied: logits = h . EMB^T (rank E) | full: Dense(V) on the trunk
  # > 0: an encoder-decoder denoiser (``model.arch=encoder_decoder``): the first ``src_len``
  # positions (BOS, the right-aligned source, SEP) are encoded without noise or t, and the rest are
  # denoised by a decoder that reads them by cross-attention; 0: one stack over the whole sequence
  src_len: int = 0
  # encoder-decoder: separate (each stack learns its own position table) | shared (one table: source
  # region index j reads row j, target index k reads row k + 1, so with data.target_start=aligned
  # source token k and target token k start from the same position vector)
  positions: str = "separate"
  # rotary position embeddings (Su et al. 2021) on the queries and keys of every self-attention, on
  # top of the learned position tables: attention scores then depend on the offset between two
  # positions from the first step, which the learned tables (initialised near zero) take many steps
  # to express
  rope: bool = False


def _p(init, names):
  return nn.with_logical_partitioning(init, names)


ACT_AXES = ("act_batch", "act_len", "act_emb")


def constrain(x_BxLxD):
  """Activation sharding by logical names; a no-op unless traced under ``sharding.mesh_context``."""
  return sharding.constrain(x_BxLxD, ACT_AXES)


def rotary(x_BxLxHxK, pos_L, max_period: float = 10_000.0):
  """Rotary position embedding: each pair (x_i, x_{i+K/2}) of every head's K-dim vector turned by
  ``pos * max_period^(-2i/K)``, so that ``rotary(q, m) . rotary(k, n)`` depends on m - n only."""
  half = x_BxLxHxK.shape[-1] // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  ang = jnp.asarray(pos_L, jnp.float32)[:, None] * freqs[None]  # (L, K/2)
  cos, sin = jnp.cos(ang)[None, :, None], jnp.sin(ang)[None, :, None]
  x1, x2 = x_BxLxHxK[..., :half], x_BxLxHxK[..., half:]
  x1, x2 = x1.astype(jnp.float32), x2.astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x_BxLxHxK.dtype)


def _self_attention_qkv(cfg: "ModelConfig", h_BxLxD, start=0):
  """Query, key and value projections of a self-attention over positions ``start .. start+L-1``
  (rotated by ``rotary`` when ``cfg.rope``), created in the calling module's scope."""
  q, k, v = [_heads(cfg, h_BxLxD, n) for n in ("query", "key", "value")]
  if cfg.rope:
    pos_L = start + jnp.arange(h_BxLxD.shape[1])
    q, k = rotary(q, pos_L), rotary(k, pos_L)
  return [q, k, v]


def timestep_embedding(t_B, dim: int, max_period: float = 10_000.0):
  """Sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t_B.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Block(nn.Module):
  """Pre-LN Transformer block; returns (x, None) so it can be scanned over layers.

  With ``cache`` = (K_BxCxHxK, V_BxCxHxK, start, write_B) (incremental decoding, ``baselines.ar``),
  the block's S positions are positions ``start .. start+S-1`` of a sequence of C: their keys and
  values are written into the cache (rows where ``write_B``), the queries attend over the whole
  cache (``mask`` is (B, 1, S, C)), and it returns (x, (K, V)).
  """
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1xLxL, cache=None):
    cfg = self.cfg
    h = layer_norm(cfg, "ln_attn")(x_BxLxD)
    qkv = _self_attention_qkv(cfg, h, 0 if cache is None else cache[2])
    kv = None
    if cache is not None:
      k_cache, v_cache, start, write_B = cache
      keep = write_B[:, None, None, None]
      kv = tuple(jnp.where(keep, jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype),
                                                                     start, axis=1), c)
                 for c, new in ((k_cache, qkv[1]), (v_cache, qkv[2])))
      qkv = [qkv[0], *kv]
    a_BxLxHxK = jax.nn.dot_product_attention(*qkv, mask=mask_Bx1xLxL)
    x_BxLxD = x_BxLxD + nn.Dropout(cfg.dropout)(_merge_heads(cfg, a_BxLxHxK, "attn_out"),
                                                deterministic=self.deterministic)
    return constrain(_mlp(cfg, x_BxLxD, self.deterministic)), kv


class CrossBlock(nn.Module):
  """A decoder block of the encoder-decoder denoiser: pre-LN self-attention over the target
  positions, cross-attention from them to the encoded source ``memory_BxSxD``, then the MLP."""
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD, memory_BxSxD):
    cfg = self.cfg
    drop = lambda v: nn.Dropout(cfg.dropout)(v, deterministic=self.deterministic)
    h = layer_norm(cfg, "ln_attn")(x_BxLxD)
    a = jax.nn.dot_product_attention(*_self_attention_qkv(cfg, h))
    x_BxLxD = x_BxLxD + drop(_merge_heads(cfg, a, "attn_out"))
    h = layer_norm(cfg, "ln_cross")(x_BxLxD)
    a = jax.nn.dot_product_attention(_heads(cfg, h, "cross_query"),
                                     _heads(cfg, memory_BxSxD, "cross_key"),
                                     _heads(cfg, memory_BxSxD, "cross_value"))
    x_BxLxD = x_BxLxD + drop(_merge_heads(cfg, a, "cross_out"))
    return constrain(_mlp(cfg, x_BxLxD, self.deterministic)), None


def _heads(cfg: ModelConfig, h_BxLxD, name: str):
  """A projection to (B, L, heads, head_dim), created in the calling module's scope."""
  return nn.DenseGeneral((cfg.num_heads, cfg.width // cfg.num_heads), dtype=jnp.dtype(cfg.dtype),
                         name=name,
                         kernel_init=_p(nn.initializers.xavier_uniform(), ("embed", "heads", "kv")),
                         bias_init=_p(nn.initializers.zeros, ("heads", "kv")))(h_BxLxD)


def _merge_heads(cfg: ModelConfig, a_BxLxHxK, name: str):
  return nn.DenseGeneral(cfg.width, axis=(-2, -1), dtype=jnp.dtype(cfg.dtype), name=name,
                         kernel_init=_p(nn.initializers.xavier_uniform(), ("heads", "kv", "embed")),
                         bias_init=_p(nn.initializers.zeros, ("embed",)))(a_BxLxHxK)


def _mlp(cfg: ModelConfig, x_BxLxD, deterministic: bool):
  """The residual pre-LN MLP of a block, created in the calling module's scope."""
  dtype = jnp.dtype(cfg.dtype)
  dense_init = nn.initializers.xavier_uniform()
  h = layer_norm(cfg, "ln_mlp")(x_BxLxD)
  h = nn.Dense(cfg.mlp_dim, dtype=dtype, name="mlp_in",
               kernel_init=_p(dense_init, ("embed", "mlp")),
               bias_init=_p(nn.initializers.zeros, ("mlp",)))(h)
  h = nn.gelu(h)
  h = nn.Dense(cfg.width, dtype=dtype, name="mlp_out",
               kernel_init=_p(dense_init, ("mlp", "embed")),
               bias_init=_p(nn.initializers.zeros, ("embed",)))(h)
  return x_BxLxD + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


def apply_blocks(cfg: ModelConfig, x_BxLxD, mask_Bx1xLxL, deterministic: bool, memory=None):
  """The Transformer blocks, created in the calling module's scope (``blocks`` or ``block_i``):
  ``Block``s, or with ``memory`` (an encoded source) ``CrossBlock``s reading it."""
  block, arg = (Block, mask_Bx1xLxL) if memory is None else (CrossBlock, memory)
  if cfg.scan_layers:
    blocks = nn.scan(block, variable_axes={"params": 0},
                     split_rngs={"params": True, "dropout": True},
                     in_axes=nn.broadcast, length=cfg.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})
    x_BxLxD, _ = blocks(cfg, deterministic, name="blocks")(x_BxLxD, arg)
  else:
    for i in range(cfg.num_layers):
      x_BxLxD, _ = block(cfg, deterministic, name=f"block_{i}")(x_BxLxD, arg)
  return x_BxLxD


def convert_layout(tree, scan_layers: bool, num_layers: int):
  """``tree`` (parameters, or anything shaped like them: EMA, Adam moments, a whole TrainState) with
  its blocks in the other layout: ``block_0`` .. ``block_{n-1}`` stacked on a leading axis into
  ``blocks`` (``scan_layers=True``), or ``blocks`` split back into them. Everything else, and a tree
  already in the wanted layout, is returned as is; the values are exact (stack / index)."""
  names = [f"block_{i}" for i in range(num_layers)]

  is_mapping = lambda x: isinstance(x, Mapping)

  def convert(node):
    if not is_mapping(node):  # tuples, optax states, TrainState: convert the mappings inside
      return jax.tree.map(lambda x: convert(x) if is_mapping(x) else x, node, is_leaf=is_mapping)
    out = {k: convert(v) for k, v in node.items() if not (k in names or k == "blocks")}
    if scan_layers and all(n in node for n in names):
      out["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[node[n] for n in names])
    elif not scan_layers and "blocks" in node:
      for i, n in enumerate(names):
        out[n] = jax.tree.map(lambda x, i=i: x[i], node["blocks"])
    else:  # already in the wanted layout
      out.update({k: node[k] for k in node if k in names or k == "blocks"})
    return out if type(node) is dict else type(node)(out)

  return convert(tree)


def scan_layers_of(tree):
  """True if ``tree`` (parameters or a state holding them) has its blocks scanned (``blocks``),
  False if unrolled (``block_0``, ...), None if it has no blocks."""
  if isinstance(tree, Mapping):
    if "blocks" in tree:
      return True
    if "block_0" in tree:
      return False
    children = tree.values()
  else:  # tuples, optax states, TrainState: the mappings inside them
    children = [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Mapping))
                if isinstance(x, Mapping)]
  for v in children:
    found = scan_layers_of(v)
    if found is not None:
      return found
  return None


def layer_norm(cfg: ModelConfig, name: str):
  return nn.LayerNorm(dtype=jnp.dtype(cfg.dtype), scale_init=_p(nn.initializers.ones, ("embed",)),
                      bias_init=_p(nn.initializers.zeros, ("embed",)), name=name)


def trunk(module: nn.Module, cfg: ModelConfig, inp_BxLxI, t_B, deterministic: bool,
          memory=None, pos_LxD=None):
  """Input projection, learned positions, timestep MLP, the blocks and the final LayerNorm, created
  in ``module``'s scope (shared by the denoiser and the noisy-embedding classifiers). With
  ``memory`` (the encoder-decoder's encoded source) the blocks also cross-attend to it, and the
  positions count from the first input position (the target's start); ``pos_LxD`` replaces the
  learned table (shared positions)."""
  dtype = jnp.dtype(cfg.dtype)
  dense_init = nn.initializers.xavier_uniform()
  L = inp_BxLxI.shape[1]
  x = nn.Dense(cfg.width, dtype=dtype, name="in_proj",
               kernel_init=_p(dense_init, ("latent", "embed")),
               bias_init=_p(nn.initializers.zeros, ("embed",)))(inp_BxLxI)
  if pos_LxD is None:
    pos_LxD = module.param("pos_emb", _p(nn.initializers.normal(0.02), ("len", "embed")),
                           (cfg.max_len, cfg.width))
  x = x + pos_LxD[None, :L].astype(dtype)
  temb = timestep_embedding(t_B, cfg.width)
  temb = nn.Dense(cfg.mlp_dim, dtype=dtype, name="time_mlp_in",
                  kernel_init=_p(dense_init, ("embed", "mlp")),
                  bias_init=_p(nn.initializers.zeros, ("mlp",)))(temb)
  temb = nn.Dense(cfg.width, dtype=dtype, name="time_mlp_out",
                  kernel_init=_p(dense_init, ("mlp", "embed")),
                  bias_init=_p(nn.initializers.zeros, ("embed",)))(nn.silu(temb))
  x = x + temb[:, None, :]
  x = constrain(nn.Dropout(cfg.dropout)(x, deterministic=deterministic))
  x = apply_blocks(cfg, x, None, deterministic, memory=memory)
  return layer_norm(cfg, "ln_out")(x)


class SourceEncoder(nn.Module):
  """The encoder of the encoder-decoder denoiser: the clean source embeddings (no noise, no t) through
  ``num_layers`` bidirectional blocks, (B, S, E) -> (B, S, D)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, src_BxSxE, deterministic: bool = True, pos_SxD=None):
    cfg = self.cfg
    x = nn.Dense(cfg.width, dtype=jnp.dtype(cfg.dtype), name="in_proj",
                 kernel_init=_p(nn.initializers.xavier_uniform(), ("latent", "embed")),
                 bias_init=_p(nn.initializers.zeros, ("embed",)))(src_BxSxE)
    if pos_SxD is None:
      pos_SxD = self.param("pos_emb", _p(nn.initializers.normal(0.02), ("len", "embed")),
                           (cfg.src_len, cfg.width))
    x = constrain(nn.Dropout(cfg.dropout)(x + pos_SxD[None].astype(x.dtype),
                                          deterministic=deterministic))
    x = apply_blocks(cfg, x, None, deterministic)
    return layer_norm(cfg, "ln_out")(x)


class Denoiser(nn.Module):
  """(z_t, t[, x_sc]) -> x0_hat, all in the E-dimensional embedding space.

  ``x_sc`` is the self-conditioning input (the previous x0 estimate, zeros when there is none); it is
  read only when ``cfg.self_cond``. With ``cfg.src_len`` (encoder-decoder) the first ``src_len``
  positions are read as the clean source by ``SourceEncoder``; their outputs are zeros (they are
  held at the source, never predicted), and the output heads run on the target positions only.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, z_t_BxLxE, t_B, x_sc_BxLxE=None, deterministic: bool = True, memory=None):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    inp = z_t_BxLxE
    if cfg.self_cond:
      x_sc = jnp.zeros_like(z_t_BxLxE) if x_sc_BxLxE is None else x_sc_BxLxE
      inp = jnp.concatenate([z_t_BxLxE, x_sc], axis=-1)
    S = cfg.src_len
    if S:
      pos = enc_pos = None
      if cfg.positions == "shared":
        pos = self.param("pos_emb_shared", _p(nn.initializers.normal(0.02), ("len", "embed")),
                         (cfg.max_len, cfg.width))
        enc_pos, pos = pos[:S], pos[1:]
      if memory is None:  # else the source encoded once for a sampling run (``encode_source``)
        memory = SourceEncoder(cfg, name="encoder")(z_t_BxLxE[:, :S], deterministic, enc_pos)
      x = trunk(self, cfg, inp[:, S:], t_B, deterministic, memory=memory, pos_LxD=pos)
    else:
      x = trunk(self, cfg, inp, t_B, deterministic)
    x0_hat = nn.Dense(cfg.emb_dim, dtype=dtype, name="out_proj",
                      kernel_init=_p(nn.initializers.xavier_uniform(), ("embed", "latent")),
                      bias_init=_p(nn.initializers.zeros, ("latent",)))(x)
    if cfg.logits_head == "full":
      logits = nn.Dense(cfg.vocab_size, dtype=dtype, name="logits_head",
                        kernel_init=_p(nn.initializers.xavier_uniform(), ("embed", "vocab")),
                        bias_init=_p(nn.initializers.zeros, ("vocab",)))(x)
      return _after_source(x0_hat, S), _after_source(logits, S)
    return _after_source(x0_hat, S)


def _after_source(out_BxTxK, src_len: int):
  """float32 outputs of the target positions, preceded by ``src_len`` zero rows for the source
  positions of an encoder-decoder, which are held at the source and never predicted."""
  return jnp.pad(out_BxTxK.astype(jnp.float32), ((0, 0), (src_len, 0), (0, 0)))


class DiffusionLM(nn.Module):
  """The learned embedding table plus the denoiser; params {'embedding': (V, E), 'denoiser': ...}
  (and 'absorbing': (E,) with ``cfg.absorbing``)."""
  cfg: ModelConfig

  def setup(self):
    self.embedding = self.param(
        "embedding", _p(nn.initializers.normal(self.cfg.emb_init_std), ("vocab", "latent")),
        (self.cfg.vocab_size, self.cfg.emb_dim))
    if self.cfg.absorbing:
      self.absorbing = self.param(
          "absorbing", _p(nn.initializers.normal(self.cfg.emb_init_std), ("latent",)),
          (self.cfg.emb_dim,))
    self.denoiser = Denoiser(self.cfg)

  def __call__(self, z_t_BxLxE, t_B, x_sc_BxLxE=None, deterministic: bool = True,
               return_logits: bool = False, memory=None):
    """x0_hat, or (x0_hat, logits_BxLxV) with ``return_logits``.

    Word logits come from the tied rounding head, ``h . EMB^T`` with the denoiser's E-dim output h
    (``logits_head="tied"``: rank E), or from a ``Dense(V)`` on the trunk's D-dim features
    (``"full"``), which can express the broad, multi-modal word distributions of high noise levels.
    With ``x0_head="softmax"`` the estimate is the embedding expected under those logits,
    ``softmax(logits) EMB`` (as in CDCD and Difformer): x0_hat stays inside the convex hull of the
    word embeddings, and a cross-entropy on the logits (``diffusion.ce_weight``) trains the denoiser as
    a classifier of the clean words, which converges much faster on small data than the regression.
    """
    cfg = self.cfg
    for key, allowed in (("x0_head", ("linear", "softmax")), ("logits_head", ("tied", "full"))):
      if getattr(cfg, key) not in allowed:
        raise ValueError(f"unknown {key} {getattr(cfg, key)!r}; use one of {allowed}")
    out = self.denoiser(z_t_BxLxE, t_B, x_sc_BxLxE, deterministic, memory=memory)
    h, logits = out if cfg.logits_head == "full" else (out, None)
    if cfg.x0_head == "linear" and not return_logits:
      return h
    emb = self.table()
    if logits is None:
      logits = embeddings.rounding_logits(emb, h)
    x0_hat = h
    if cfg.x0_head == "softmax":
      x0_hat = jnp.einsum("blv,ve->ble", jax.nn.softmax(logits, axis=-1), emb)
    return (x0_hat, logits) if return_logits else x0_hat

  def table(self):
    """The embedding table as read (``embeddings.normalize`` by ``emb_norm``)."""
    return embeddings.normalize(self.embedding, self.cfg.emb_norm, self.cfg.emb_scale)


def encode_source(cfg: ModelConfig, params, src_BxSxE):
  """The encoder-decoder's encoded source (what the denoiser cross-attends to) from a
  ``DiffusionLM``'s params. The encoder reads only the clean source, which a sampler holds fixed,
  so a sampling run computes it once and passes it as ``memory`` to every step."""
  dp = nn.meta.unbox(params["denoiser"])
  enc_pos = dp["pos_emb_shared"][:cfg.src_len] if cfg.positions == "shared" else None
  return SourceEncoder(cfg).apply({"params": dp["encoder"]}, src_BxSxE, True, enc_pos)


def init_params(cfg: ModelConfig, rng, batch_size: int = 1):
  """Boxed (logically partitioned) params of a ``DiffusionLM``."""
  model = DiffusionLM(cfg)
  z = jnp.zeros((batch_size, cfg.max_len, cfg.emb_dim), jnp.float32)
  t = jnp.ones((batch_size,), jnp.int32)
  return model.init({"params": rng}, z, t)["params"]
