"""Sampling as a function of a trained run: load a workdir, then ``generate(...)`` returns text.

    run = load_run("runs/e2e")
    texts = run.generate(8, sampler="ddim", steps=100, seed=0)         # unconditional
    texts = run.generate(sources=["name : Aromi | food : Thai"], steps=100)  # seq2seq
"""
import dataclasses
import functools
import json
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffusion_text import checkpointing, denoiser, embeddings, optim, process, samplers, sharding
from diffusion_text import train_state as ts
from diffusion_text.data import packing, pipeline, tokenizers
from diffusion_text.errors import CheckpointError

CONFIG_FILE = "config.json"


def model_config(config, vocab_size: int) -> denoiser.ModelConfig:
  m = config.model
  return denoiser.ModelConfig(
      vocab_size=vocab_size, max_len=config.data.max_len, emb_dim=m.emb_dim, width=m.width,
      num_layers=m.num_layers, num_heads=m.num_heads, mlp_dim=m.mlp_dim, dropout=m.dropout,
      emb_init_std=m.emb_init_std, scan_layers=m.scan_layers, dtype=m.dtype)


def diffusion_of(config) -> process.Diffusion:
  return process.Diffusion(config.diffusion.schedule, config.diffusion.num_steps)


def make_sample_fn(model: denoiser.DiffusionLM, diffusion: process.Diffusion, *, sampler: str,
                   steps: int, clamp: bool, eta: float):
  """A jitted ``(params, rng, ids_BxL, target_mask_BxL) -> ids_BxL``.

  Positions with ``target_mask`` 0 are held at the embeddings of ``ids`` (the source of a seq2seq
  input); positions with mask 1 are generated. Unconditional sampling is an all-ones mask.
  """

  @jax.jit
  def sample_ids(params, rng, ids_BxL, target_mask_BxL):
    emb = params["embedding"]
    denoise = lambda z, t: model.apply({"params": params}, z, t, deterministic=True)
    x_cond = embeddings.embed(emb, ids_BxL)
    x0 = samplers.sample(denoise, emb, diffusion, rng, shape=x_cond.shape, steps=steps or None,
                         sampler=sampler, clamp=clamp, eta=eta, x_cond_BxLxE=x_cond,
                         mask_BxL=target_mask_BxL)
    return jnp.where(target_mask_BxL > 0, embeddings.round_to_ids(emb, x0), ids_BxL)

  return sample_ids


def decode_output(tok: tokenizers.Tokenizer, ids, task: str) -> str:
  """Text of one output row: the target part for seq2seq, the whole sequence otherwise."""
  if task == "seq2seq":
    return tok.decode(packing.unpack(ids)[1] + [tokenizers.EOS])
  return tok.decode(ids)


def unconditional_inputs(num: int, max_len: int):
  return np.zeros((num, max_len), np.int32), np.ones((num, max_len), np.int32)


@dataclasses.dataclass
class Run:
  """A trained run: config, tokenizer, model and EMA parameters."""
  workdir: str
  config: ml_collections.ConfigDict
  tokenizer: tokenizers.Tokenizer
  model: denoiser.DiffusionLM
  params: dict
  step: int
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  @functools.cached_property
  def diffusion(self) -> process.Diffusion:
    return diffusion_of(self.config)

  def _sample_fn(self, sampler, steps, clamp, eta):
    key = (sampler, steps, clamp, eta)
    if key not in self._compiled:
      self._compiled[key] = make_sample_fn(self.model, self.diffusion, sampler=sampler,
                                           steps=steps, clamp=clamp, eta=eta)
    return self._compiled[key]

  @property
  def is_seq2seq(self) -> bool:
    return self.config.data.task == "seq2seq"

  def pack_sources(self, sources: Sequence[str]):
    """(ids, target_mask) sampling inputs for source texts."""
    d = self.config.data
    packed = [packing.pack_source(self.tokenizer.encode(s), d.max_len, pipeline.max_src_len(d))
              for s in sources]
    return np.stack([p[0] for p in packed]), np.stack([p[1] for p in packed])

  def generate_ids(self, num_samples: Optional[int] = None, *, sources: Optional[Sequence[str]] = None,
                   sampler: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
                   clamp: Optional[bool] = None, eta: Optional[float] = None,
                   batch_size: Optional[int] = None) -> np.ndarray:
    """Packed output ids, (N, L): ``num_samples`` unconditional samples, or one per source."""
    if self.is_seq2seq != (sources is not None):
      raise ValueError("a seq2seq run needs `sources`; an unconditional run takes `num_samples`"
                       if self.is_seq2seq else "this run is unconditional: pass num_samples")
    if sources is not None:
      ids, mask = self.pack_sources(sources)
    else:
      ids, mask = unconditional_inputs(num_samples, self.config.data.max_len)
    num = len(ids)
    s = self.config.sample
    sampler = sampler or s.sampler
    steps = steps or s.steps or self.diffusion.num_steps
    clamp = s.clamp if clamp is None else clamp
    eta = s.eta if eta is None else eta
    batch_size = min(batch_size or s.batch_size, num)
    process.timestep_grid(self.diffusion.num_steps, steps)  # validates steps
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(samplers.SAMPLERS)}")
    fn = self._sample_fn(sampler, int(steps), bool(clamp), float(eta))
    rng = jax.random.PRNGKey(seed)
    out = []
    for i in range(-(-num // batch_size)):
      chunk = slice(i * batch_size, (i + 1) * batch_size)
      b_ids, b_mask = ids[chunk], mask[chunk]
      pad = batch_size - len(b_ids)  # keep one compiled shape: pad the last batch
      if pad:
        b_ids = np.concatenate([b_ids, np.repeat(b_ids[-1:], pad, 0)])
        b_mask = np.concatenate([b_mask, np.repeat(b_mask[-1:], pad, 0)])
      out.append(np.asarray(fn(self.params, jax.random.fold_in(rng, i), b_ids, b_mask)))
    return np.concatenate(out)[:num]

  def decode(self, ids) -> str:
    return decode_output(self.tokenizer, ids, self.config.data.task)

  def generate(self, num_samples: Optional[int] = None, **kwargs) -> list[str]:
    """Decoded samples; keyword arguments as ``generate_ids`` (sources, sampler, steps, seed, ...)."""
    return [self.decode(ids) for ids in self.generate_ids(num_samples, **kwargs)]


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} is not a training run: {CONFIG_FILE} not found")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str, step: Optional[int] = None) -> Run:
  """Loads the run in ``workdir`` (its latest checkpoint unless ``step``) with EMA parameters."""
  config = load_config(workdir)
  tok = tokenizers.load_tokenizer(os.path.join(workdir, pipeline.TOKENIZER_FILE))
  model_cfg = model_config(config, tok.vocab_size)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  tx = optim.make_optimizer(config.optim, config.train.num_train_steps)
  abstract, _ = ts.state_shardings(model_cfg, tx, mesh, sharding.axis_rules(config))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {workdir}/checkpoints")
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return Run(workdir=workdir, config=config, tokenizer=tok, model=denoiser.DiffusionLM(model_cfg),
             params=state.ema_params, step=int(step))
