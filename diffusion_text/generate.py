"""Sampling as a function of a trained run: load a workdir, then ``generate(...)`` returns text.

    run = load_run("runs/e2e")
    texts = run.generate(8, sampler="ddim", steps=100, seed=0)
"""
import dataclasses
import functools
import json
import os
from typing import Optional

import jax
import ml_collections
import numpy as np

from diffusion_text import checkpointing, denoiser, embeddings, optim, process, samplers, sharding
from diffusion_text import train_state as ts
from diffusion_text.data import pipeline, tokenizers
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


def make_sample_fn(model: denoiser.DiffusionLM, diffusion: process.Diffusion, *, num_samples: int,
                   sampler: str, steps: int, clamp: bool, eta: float):
  """A jitted ``(params, rng) -> ids (num_samples, L)`` for unconditional generation."""
  cfg = model.cfg
  shape = (num_samples, cfg.max_len, cfg.emb_dim)

  @jax.jit
  def sample_ids(params, rng):
    emb = params["embedding"]
    denoise = lambda z, t: model.apply({"params": params}, z, t, deterministic=True)
    x0 = samplers.sample(denoise, emb, diffusion, rng, shape=shape, steps=steps or None,
                         sampler=sampler, clamp=clamp, eta=eta)
    return embeddings.round_to_ids(emb, x0)

  return sample_ids


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

  def _sample_fn(self, num_samples, sampler, steps, clamp, eta):
    key = (num_samples, sampler, steps, clamp, eta)
    if key not in self._compiled:
      self._compiled[key] = make_sample_fn(self.model, self.diffusion, num_samples=num_samples,
                                           sampler=sampler, steps=steps, clamp=clamp, eta=eta)
    return self._compiled[key]

  def generate_ids(self, num_samples: int, *, sampler: Optional[str] = None,
                   steps: Optional[int] = None, seed: int = 0, clamp: Optional[bool] = None,
                   eta: Optional[float] = None, batch_size: Optional[int] = None) -> np.ndarray:
    s = self.config.sample
    sampler = sampler or s.sampler
    steps = steps or s.steps or self.diffusion.num_steps
    clamp = s.clamp if clamp is None else clamp
    eta = s.eta if eta is None else eta
    batch_size = min(batch_size or s.batch_size, num_samples)
    process.timestep_grid(self.diffusion.num_steps, steps)  # validates steps
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(samplers.SAMPLERS)}")
    fn = self._sample_fn(batch_size, sampler, int(steps), bool(clamp), float(eta))
    rng = jax.random.PRNGKey(seed)
    out = []
    for i in range(-(-num_samples // batch_size)):
      out.append(np.asarray(fn(self.params, jax.random.fold_in(rng, i))))
    return np.concatenate(out)[:num_samples]

  def generate(self, num_samples: int, **kwargs) -> list[str]:
    """Decoded samples; keyword arguments as ``generate_ids`` (sampler, steps, seed, clamp, eta)."""
    return [self.tokenizer.decode(ids) for ids in self.generate_ids(num_samples, **kwargs)]


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
