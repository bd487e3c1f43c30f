r"""Where does sampling fail? Noise held-out targets to t0 with q(x_t0 | x0), run the sampler from t0 to 0
and score the result against the target it started from (BLEU), for several t0.

    python -m experiments.recovery --workdir runs/e2e_diffuseq_ce --t0 500,1000,1500,1800,2000

A model that recovers the text from t0 = 1000 but not from T writes word salad because of the
high-noise regime (the plan of the sentence), not because of rounding or the low-noise steps. Writes
``<workdir>/eval/recovery_step<N>.json``.
"""
import json
import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import embeddings, generate, metrics, process, samplers
from diffusion_text.data import pipeline
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A diffusion run.")
_T0 = flags.DEFINE_list("t0", ["500", "1000", "1500", "1800", "2000"], "Start noise levels.")
_NUM = flags.DEFINE_integer("num_inputs", 64, "Held-out examples (every 10th of the split).")
_STEPS = flags.DEFINE_integer("steps", 20, "Sampler steps from t0 to 0.")
_SAMPLER = flags.DEFINE_string("sampler", "dpm++2m", "ddpm | ddim | dpm++2m.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Held-out split.")
flags.mark_flags_as_required(["workdir"])


def recovery(run, t0s, num_inputs, steps, sampler, split="validation", seed=0) -> list[dict]:
  source = pipeline.prepare_sources(run.config.data)[split]
  encode = pipeline.make_encoder(run.tokenizer, run.config.data)
  idx = list(range(0, len(source), 10))[:num_inputs]
  rows = [encode(source[i]) for i in idx]
  ids = jnp.asarray(np.stack([r["ids"] for r in rows]))
  mask = jnp.asarray(np.stack([r["target_mask"] for r in rows]))
  refs = [[run.decode(r["ids"])] for r in rows]
  emb, ab, T = run.params["embedding"], run.diffusion.alpha_bar, run.diffusion.num_steps
  x0 = embeddings.embed(emb, ids)
  denoise = lambda z, t, x_sc: run.model.apply({"params": run.params}, z, t, x_sc)
  out = []
  for t0 in t0s:
    if not 1 <= t0 <= T:
      raise ValueError(f"t0 must be in [1, T={T}], got {t0}")
    grid = np.unique(np.round(np.linspace(t0, 0, steps + 1)).astype(np.int32))[::-1]
    eps = jax.random.normal(jax.random.PRNGKey(seed), x0.shape)
    z = process.q_sample(x0, ab[jnp.full((len(rows),), t0)], eps, mask)
    x = samplers.sample(denoise, emb, run.diffusion, jax.random.PRNGKey(seed + 1), shape=x0.shape,
                        sampler=sampler, x_cond_BxLxE=x0, mask_BxL=mask, grid=grid, x_init_BxLxE=z)
    got = np.asarray(jnp.where(mask > 0, embeddings.round_to_ids(emb, x), ids))
    hyps = [run.decode(r) for r in got]
    out.append({"t0": int(t0), "alpha_bar": float(ab[t0]), **metrics.bleu(hyps, refs),
                "example": hyps[0], "target": refs[0][0]})
  return out


def run():
  r = generate.load_run(_WORKDIR.value)
  if r.config.model.family != "diffusion":
    raise common.UserError(f"{_WORKDIR.value} is not a diffusion run")
  try:
    rows = recovery(r, [int(t) for t in _T0.value], _NUM.value, _STEPS.value, _SAMPLER.value,
                    _SPLIT.value)
  except ValueError as e:
    raise common.UserError(str(e)) from e
  result = {"workdir": _WORKDIR.value, "step": r.step, "sampler": _SAMPLER.value,
            "steps": _STEPS.value, "split": _SPLIT.value, "num_inputs": _NUM.value, "rows": rows}
  path = os.path.join(_WORKDIR.value, "eval", f"recovery_step{r.step}.json")
  common.write_atomic(path, json.dumps(result, indent=2))
  for row in rows:
    print(f"t0={row['t0']:>5}  alpha_bar={row['alpha_bar']:.3f}  BLEU {row['bleu']:5.1f}  "
          f"{row['example']}")
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(common.main_for(run))
