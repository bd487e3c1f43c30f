"""Where a diffusion LM decides its words: per noise level t, what one denoiser call on
x_t ~ q(x_t | x0) reads of the clean text (``evaluate --evaluators decided``).

For held-out texts and each t on a grid, the share of non-PAD target words that the call names
(argmax of its logits, or the nearest embedding for a model without logits), their mean
cross-entropy -log p(w | x_t) in nats (models with logits), and the share of PAD positions named
PAD. The band of t where word accuracy climbs from near 0 to near 1 is where a sentence's words get
decided; a sampler spends its steps across all t, so a band squeezed into the last few percent of
the chain is a model that plans nothing until the end (issue 39, lever 4: where training spends
its noise levels).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import decoding, embeddings, heldout, process
from diffusion_text.data import pipeline, tokenizers
from diffusion_text.generate import Run

T_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def terms_by_t(model, params, config, diffusion: process.Diffusion, rng, ids_BxL, target_mask_BxL,
               t_list) -> dict:
  """Per row (B,) sums for each t of ``t_list``: ``words``, ``pads`` (target positions),
  ``word_hits_<t>``, ``pad_hits_<t>`` and, for a model with logits, ``word_ce_<t>``. Traceable."""
  emb = embeddings.table(params, config.model)
  x0 = embeddings.embed(emb, ids_BxL)
  target = target_mask_BxL > 0
  words, pads = target & (ids_BxL != tokenizers.PAD), target & (ids_BxL == tokenizers.PAD)
  out = {"words": jnp.sum(words, -1), "pads": jnp.sum(pads, -1)}
  for i, t in enumerate(t_list):
    t_B = jnp.full((ids_BxL.shape[0],), t, jnp.int32)
    eps = jax.random.normal(jax.random.fold_in(rng, i), x0.shape)
    z = process.q_sample(x0, diffusion.alpha_bar[t_B], eps, target_mask_BxL)
    x_sc = jnp.zeros_like(z)
    if decoding.has_logits(config):
      _, logits = model.apply({"params": params}, z, t_B, x_sc, deterministic=True,
                              return_logits=True)
      pred = jnp.argmax(logits, -1)
      nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), ids_BxL[..., None], -1)[..., 0]
      out[f"word_ce_{t}"] = jnp.sum(nll * words, -1)
    else:
      pred = decoding.one_step_ids(model, params, config, z, t_B)
    out[f"word_hits_{t}"] = jnp.sum((pred == ids_BxL) & words, -1)
    out[f"pad_hits_{t}"] = jnp.sum((pred == ids_BxL) & pads, -1)
  return out


def half_decided(rows: list[dict]) -> float:
  """The t fraction (linear between grid points) above which fewer than half the words are named:
  where the chain, run from T down, has decided half of them; 1.0 if half are named even at T."""
  fr = [r["t_fraction"] for r in rows]
  acc = [r["word_acc"] for r in rows]
  for k in range(len(rows) - 1, -1, -1):
    if acc[k] >= 0.5:
      if k == len(rows) - 1:
        return 1.0
      a, b = acc[k], acc[k + 1]
      return fr[k] + (fr[k + 1] - fr[k]) * (a - 0.5) / (a - b)
  return 0.0


def decided_run(run: Run, *, split: str = "validation", num_inputs: int = 256, seed: int = 0,
                batch_size: int = 64) -> dict:
  """The per-t table (``terms_by_t`` over the first ``num_inputs`` examples of ``split``, the
  grid ``T_FRACTIONS`` of T) and ``half_decided``."""
  if run.config.model.family != "diffusion":
    raise ValueError(f"{run.workdir} is not a diffusion run: 'decided' reads a denoiser")
  t0 = time.time()
  data = pipeline.prepare_sources(run.config.data)
  if split not in data:
    raise ValueError(f"split {split!r} not in dataset; have {sorted(data)}")
  source = pipeline.model_examples(data[split], run.tokenizer, run.config.data)
  encode = pipeline.make_encoder(run.tokenizer, run.config.data)
  rows = [encode(source[i]) for i in range(min(len(source), num_inputs or len(source)))]
  ids = np.stack([r["ids"] for r in rows])
  mask = np.stack([r["target_mask"] for r in rows])
  T = run.diffusion.num_steps
  t_list = sorted({max(1, min(T, int(round(f * T)))) for f in T_FRACTIONS})
  fn = jax.jit(lambda p, i, m, rng: terms_by_t(run.model, p, run.config, run.diffusion, rng, i, m,
                                               t_list))
  sums = {k: float(v.sum()) for k, v in
          heldout.map_batches(fn, run.params, ids, mask, batch_size, seed).items()}
  table = []
  for t in t_list:
    row = {"t": t, "t_fraction": round(t / T, 4),
           "word_acc": sums[f"word_hits_{t}"] / max(sums["words"], 1.0),
           "pad_acc": sums[f"pad_hits_{t}"] / max(sums["pads"], 1.0)}
    if f"word_ce_{t}" in sums:
      row["word_ce"] = sums[f"word_ce_{t}"] / max(sums["words"], 1.0)
    table.append(row)
  return {"workdir": run.workdir, "checkpoint_step": run.step, "split": split,
          "num_inputs": len(rows), "seed": seed, "rows": table,
          "half_decided": half_decided(table), "seconds": round(time.time() - t0, 1)}
