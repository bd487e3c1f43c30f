"""The recovery diagnostic: sample from q(x_t0 | x0) back to 0 and score against x0, per t0."""
import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import decoding, embeddings, metrics, process
from diffusion_text.data import pipeline, tokenizers
from diffusion_text.generate import Run


def recovery(run: Run, t0s, num_inputs, steps, sampler, split="validation", seed=0) -> list[dict]:
  """BLEU of sampling from q(x_t0 | x0) back to 0, against the target it started from, per t0
  (the ``recovery`` evaluator): where along the chain a model stops being able to write the text.

  Each row also scores the denoiser's own one-step word prediction at t0
  (``decoding.one_step_ids``): ``one_step_bleu`` and ``token_acc`` (on the target's non-PAD
  positions). When the trajectory's BLEU falls below the one-step BLEU, the sampler loses a plan the
  model had read from x_t0; when both are low, the model cannot read the plan at that noise level.
  """
  source = pipeline.prepare_sources(run.config.data)[split]
  encode = pipeline.make_encoder(run.tokenizer, run.config.data)
  idx = list(range(0, len(source), 10))[:num_inputs]
  rows = [encode(source[i]) for i in idx]
  ids = jnp.asarray(np.stack([r["ids"] for r in rows]))
  mask = jnp.asarray(np.stack([r["target_mask"] for r in rows]))
  refs = [[run.decode(r["ids"])] for r in rows]
  emb = embeddings.table(run.params, run.config.model)
  ab, T = run.diffusion.alpha_bar, run.diffusion.num_steps
  x0 = embeddings.embed(emb, ids)
  out = []
  for t0 in t0s:
    if not 1 <= t0 <= T:
      raise ValueError(f"t0 must be in [1, T={T}], got {t0}")
    grid = np.unique(np.round(np.linspace(t0, 0, steps + 1)).astype(np.int32))[::-1]
    eps = jax.random.normal(jax.random.PRNGKey(seed), x0.shape)
    z = process.q_sample(x0, ab[jnp.full((len(rows),), t0)], eps, mask)
    got = np.asarray(decoding.decode_ids(run.model, run.params, run.config, run.diffusion,
                                         jax.random.PRNGKey(seed + 1), ids, mask, sampler=sampler,
                                         grid=grid, x_init_BxLxE=z))
    hyps = [run.decode(r) for r in got]
    t_B = jnp.full((len(rows),), t0, jnp.int32)
    pred = decoding.one_step_ids(run.model, run.params, run.config, z, t_B)
    one = np.asarray(jnp.where(mask > 0, pred, ids))
    words = (mask > 0) & (ids != tokenizers.PAD)
    acc = float(jnp.sum((pred == ids) & words) / jnp.maximum(jnp.sum(words), 1))
    out.append({"t0": int(t0), "alpha_bar": float(ab[t0]), **metrics.bleu(hyps, refs),
                "one_step_bleu": metrics.bleu([run.decode(r) for r in one], refs)["bleu"],
                "token_acc": acc, "example": hyps[0], "target": refs[0][0]})
  return out
