"""Sampling as a function of a trained run: load a workdir, then ``generate(...)`` returns text.

    run = load_run("runs/e2e")
    texts = run.generate(8, sampler="ddim", steps=100, seed=0)         # unconditional
    texts = run.generate(sources=["name : Aromi | food : Thai"], steps=100)  # seq2seq
"""
import dataclasses
import functools
import math
import os
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from diffusion_text import (batching, checkpointing, control, decoding, exported, families,
                            process, runs, sharding)
from diffusion_text import train_state as ts
from diffusion_text.data import delex, e2e, packing, pipeline, sources, tokenizers
from diffusion_text.errors import CheckpointError

def decode_output(tok: tokenizers.Tokenizer, ids, task: str, target_start: str = "") -> str:
  """Text of one output row: the target part for seq2seq, the whole sequence otherwise (and for
  ``in_place`` seq2seq, whose target is the whole sequence)."""
  if task == "seq2seq" and target_start != "in_place":
    return tok.decode(packing.unpack(ids)[1] + [tokenizers.EOS])
  return tok.decode(ids)


def collapse_repeats(text: str) -> str:
  """``text`` with each run of one repeated word kept once ("has high high ratings" -> "has high
  ratings"): the post-processing non-autoregressive decoders use for their repeated tokens (Gu et
  al. 2018; Lee et al. 2018)."""
  words = text.split()
  return " ".join(w for k, w in enumerate(words) if k == 0 or w != words[k - 1])


def unconditional_inputs(num: int, max_len: int):
  return np.zeros((num, max_len), np.int32), np.ones((num, max_len), np.int32)


def _in_place_text(tok: tokenizers.Tokenizer, src: str, ids) -> str:
  """An ``in_place`` output, one word per source word: the model's word at each position, except
  that a given source word the vocabulary lacks (UNK) is copied from the source, so no word is
  lost; special tokens written into a slot are dropped."""
  src_words = src.split()
  out = []
  for word, i in zip(src_words, np.asarray(ids).tolist()[1: 1 + len(src_words)]):
    if i == tokenizers.UNK and word != sources.SLOT:
      out.append(word)
    elif i >= len(tokenizers.SPECIALS):
      out.append(tok.decode_ids([i]))
  return " ".join(out)


@dataclasses.dataclass
class Run:
  """A trained run: config, tokenizer, model and EMA parameters."""
  workdir: str
  config: ml_collections.ConfigDict
  tokenizer: tokenizers.Tokenizer
  model: object  # the family's Flax module
  params: dict
  step: int
  mesh: Optional[jax.sharding.Mesh] = None  # where params live and batches are split (default: 1 device)
  context: object = None  # the family's setup output: a classifier's frozen base run
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  @functools.cached_property
  def diffusion(self) -> process.Diffusion:
    return families.diffusion_of(self.config)

  def _sample_fn(self, sampler, steps, clamp, eta, commit=False):
    # the family's decoder also reads the config's dials
    key = (sampler, steps, clamp, eta, commit, *decoding.dials(self.config.sample).values())
    if key not in self._compiled:
      self._compiled[key] = families.family_of(self.config).make_decoder(
          self.model, self.config, sampler, steps, clamp, eta, commit=commit)
    return self._compiled[key]

  @property
  def is_seq2seq(self) -> bool:
    return self.config.data.task == "seq2seq"

  def pack_sources(self, sources: Sequence[str]):
    """(ids, target_mask) sampling inputs for source texts."""
    d = self.config.data
    dx = delex.of(d)
    slot = pipeline.slot_id(self.tokenizer, d)
    ids = [self.tokenizer.encode(dx.source(s)) for s in sources]
    if not d.get("cut_sources", False):
      pipeline.check_source_lengths([len(x) for x in ids], sources, pipeline.source_limit(d),
                                    "sources")
    packed = [pipeline.pack_source(d, x, slot) for x in ids]
    return np.stack([p[0] for p in packed]), np.stack([p[1] for p in packed])

  def generate_ids(self, num_samples: Optional[int] = None, *, sources: Optional[Sequence[str]] = None,
                   sampler: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
                   clamp: Optional[bool] = None, eta: Optional[float] = None,
                   batch_size: Optional[int] = None, commit: Optional[bool] = None) -> np.ndarray:
    """Packed output ids, (N, L): ``num_samples`` unconditional samples, or one per source (a
    string is one source)."""
    if isinstance(sources, str):
      sources = [sources]
    if self.is_seq2seq != (sources is not None):
      raise ValueError("a seq2seq run needs `sources`; an unconditional run takes `num_samples`"
                       if self.is_seq2seq else "this run is unconditional: pass num_samples")
    if sources is not None:
      ids, mask = self.pack_sources(sources)
    else:
      ids, mask = unconditional_inputs(num_samples, self.config.data.max_len)
    s = self.config.sample
    sampler = sampler or s.sampler
    steps = steps or s.steps or self.diffusion.num_steps
    clamp = s.clamp if clamp is None else clamp
    eta = s.eta if eta is None else eta
    commit = s.commit if commit is None else commit
    decoders = families.family_of(self.config).decoders
    if sampler not in decoders:
      raise ValueError(f"unknown sampler {sampler!r} for this model; choose one of {decoders}")
    if self.config.model.family == "diffusion":
      process.timestep_grid(self.diffusion.num_steps, steps)  # validates steps
    elif commit:
      raise ValueError("commit is an option of the diffusion samplers")
    fn = self._sample_fn(sampler, int(steps), bool(clamp), float(eta), bool(commit))
    groups = self.slot_groups(sources) if decoding.dials(s)["slot_guidance"] else None
    return self._decode_batches(fn, ids, mask, seed, batch_size or s.batch_size, groups)

  def slot_groups(self, sources: Sequence[str]) -> np.ndarray:
    """The word groups of ``sample.slot_guidance`` for E2E sources, as the model reads them."""
    if self.config.model.family != "diffusion" or not self.is_seq2seq:
      raise ValueError("slot guidance steers a diffusion seq2seq run toward its MR's fields")
    if not e2e.is_e2e(sources):
      raise ValueError("slot guidance needs E2E MRs (name : X | Type : pub | ...); these "
                       "sources are not")
    dx = delex.of(self.config.data)
    return control.slot_groups(self.tokenizer, [dx.source(x) if dx else x for x in sources])

  def generate_nbest(self, sources: Sequence[str], beam: int, *, batch_size: Optional[int] = None,
                     collapse: Optional[bool] = None) -> list[list[str]]:
    """Each source's ``beam`` beam-search hypotheses, best first (an AR seq2seq run's n-best
    list), as ``generate``'s texts."""
    if self.config.model.family != "ar" or not self.is_seq2seq:
      raise ValueError("an n-best list is beam search's: it needs an AR seq2seq run")
    if beam < 1:
      raise ValueError(f"beam must be >= 1, got {beam}")
    sources = [sources] if isinstance(sources, str) else list(sources)
    ids, mask = self.pack_sources(sources)
    fn = self._sample_fn("nbest", int(beam), False, 0.0)
    rows = self._decode_batches(fn, ids, mask, 0, batch_size or self.config.sample.batch_size)
    texts = self.decode_outputs(rows.reshape(-1, rows.shape[-1]),
                                [s for s in sources for _ in range(beam)], collapse)
    return [texts[i * beam:(i + 1) * beam] for i in range(len(sources))]

  def _decode_batches(self, fn, ids, mask, seed: int, batch_size: int,
                      groups: Optional[np.ndarray] = None) -> np.ndarray:
    """``fn``'s output rows for the inputs (ids, mask[, slot guidance's groups]), decoded in
    batches split over the mesh's batch axes (the batch of ``start`` seeded
    ``fold_in(seed, start // batch_size)``)."""
    num = len(ids)
    mesh = self.mesh or sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    shards = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
    batch_size = min(batch_size, num)
    batch_size = -(-batch_size // shards) * shards  # the batch is split over the mesh's batch axes
    rng = jax.random.PRNGKey(seed)
    out = []
    arrays = {"ids": ids, "mask": mask, **({} if groups is None else {"groups": groups})}
    for start, n, parts in batching.padded_batches(batch_size, *arrays.values()):
      batch = sharding.global_batch(dict(zip(arrays, parts)), mesh)
      with sharding.mesh_context(mesh, sharding.axis_rules(self.config)):
        ids_out = fn(self.params, jax.random.fold_in(rng, start // batch_size),
                     *(batch[k] for k in arrays))
      out.append(np.asarray(sharding.to_host(ids_out))[:n])
    return np.concatenate(out)

  def decode(self, ids) -> str:
    return decode_output(self.tokenizer, ids, self.config.data.task, self.config.data.target_start)

  def generate(self, num_samples: Optional[int] = None, collapse: Optional[bool] = None,
               **kwargs) -> list[str]:
    """Decoded samples; keyword arguments as ``generate_ids`` (sources, sampler, steps, seed, ...).
    With ``data.delex``, each output's placeholders are replaced by its source's values;
    ``collapse`` as ``decode_outputs``. A string ``sources`` is one source (one output)."""
    if isinstance(kwargs.get("sources"), str):
      kwargs["sources"] = [kwargs["sources"]]
    if self.config.data.get("pack_blocks") and not self.is_seq2seq:
      return self._block_texts(num_samples, collapse, **kwargs)
    return self.decode_outputs(self.generate_ids(num_samples, **kwargs), kwargs.get("sources"),
                               collapse)

  MAX_BLOCK_ROUNDS = 20

  def _block_texts(self, num: int, collapse: Optional[bool], seed: int = 0, **kwargs) -> list[str]:
    """``num`` texts of a block-packed run (``data.pack_blocks``): rounds of ``num`` sampled blocks
    (seeds ``seed``, ``seed + 1``, ...), each block giving its complete texts
    (``packing.split_blocks``), until there are ``num``."""
    texts = []
    for k in range(self.MAX_BLOCK_ROUNDS):
      for row in self.generate_ids(num, seed=seed + k, **kwargs):
        texts += [self.tokenizer.decode(span) for span in packing.split_blocks(row)]
      if len(texts) >= num:
        break
    else:
      raise ValueError(f"{self.MAX_BLOCK_ROUNDS} rounds of {num} sampled blocks held "
                       f"{len(texts)} complete texts, fewer than {num}")
    if self.config.sample.collapse_repeats if collapse is None else collapse:
      texts = [collapse_repeats(t) for t in texts]
    return texts[:num]

  def decode_outputs(self, rows, sources: Optional[Sequence[str]] = None,
                     collapse: Optional[bool] = None) -> list[str]:
    """Texts of output rows; for a seq2seq run given the ``sources`` they were generated from,
    with ``data.delex``'s placeholders replaced by each source's values. ``collapse`` (default
    ``sample.collapse_repeats``) keeps one word of each run of a repeated word."""
    if sources is not None and self.config.data.target_start == "in_place":
      return [_in_place_text(self.tokenizer, s, ids) for s, ids in zip(sources, rows)]
    texts = [self.decode(ids) for ids in rows]
    if self.config.sample.collapse_repeats if collapse is None else collapse:
      texts = [collapse_repeats(t) for t in texts]
    dx = delex.of(self.config.data)
    if dx and sources is not None:
      texts = [dx.relex(s, t) for s, t in zip(sources, texts)]
    return texts


def _context(family, config):
  """What a loaded run holds beside its parameters (a classifier's base run), if its family keeps
  it for sampling."""
  return family.setup(config, load_run) if family.setup_on_load else None


def load_run(workdir: str, step: Optional[int] = None,
             mesh: Optional[jax.sharding.Mesh] = None,
             scan_layers: Optional[bool] = None) -> Run:
  """Loads the run in ``workdir`` (its latest checkpoint unless ``step``) with EMA parameters.

  ``mesh`` (default: one device) is where the parameters are restored, laid out by the run's axis
  rules, whatever mesh the checkpoint was written on; sampling then splits batches over it.
  ``scan_layers`` (default: as trained) runs the blocks scanned or unrolled whatever layout the run
  was trained with; the parameters are converted exactly (``denoiser.convert_layout``). On XLA:CPU an
  unrolled model trains faster and a scanned one samples faster (README "Performance").
  ``workdir`` may also be an exported run (``diffusion_text.exported``): its one step is loaded.
  """
  config = runs.load_config(workdir)
  tok = runs.load_tokenizer(workdir)
  if scan_layers is not None:
    config.model.scan_layers = bool(scan_layers)  # the config describes the model that runs
  model_cfg = families.model_config(config, tok.vocab_size)
  family = families.family_of(config)
  mesh = mesh or sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  if exported.is_exported(workdir):
    info = exported.read_info(workdir)
    if step is not None and step != info["step"]:
      raise CheckpointError(f"{workdir} is an export of step {info['step']} alone, not {step}")
    params = exported.load_params(workdir, family.init_params, model_cfg, mesh,
                                  sharding.axis_rules(config))
    return Run(workdir=workdir, config=config, tokenizer=tok, model=family.build(model_cfg),
               params=params, step=int(info["step"]), mesh=mesh,
               context=_context(family, config))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {workdir}/checkpoints")
    if step not in ckpt.all_steps():
      raise CheckpointError(f"no checkpoint at step {step} in {workdir}/checkpoints "
                            f"(there are: {sorted(ckpt.all_steps())})")
    # the EMA parameters alone, the blocks in the wanted layout whichever the checkpoint has
    params = ts.restore_ema_params(ckpt, step, family.init_params, model_cfg, mesh,
                                   sharding.axis_rules(config))
  finally:
    ckpt.close()
  return Run(workdir=workdir, config=config, tokenizer=tok, model=family.build(model_cfg),
             params=params, step=int(step), mesh=mesh,
             context=_context(family, config))
