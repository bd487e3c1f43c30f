r"""Where does sampling fail? Noise held-out targets to t0 with q(x_t0 | x0), run the sampler from t0 to 0
and score the result against the target it started from (BLEU), for several t0.

    python -m experiments.recovery --workdir runs/e2e_diffuseq_ce --t0 500,1000,1500,1800,2000

A model that recovers the text from t0 = 1000 but not from T writes word salad because of the
high-noise regime (the plan of the sentence), not because of rounding or the low-noise steps. Each
row also scores the denoiser's one-step word prediction from q(x_t0 | x0) (BLEU and token accuracy),
which tells a model that cannot read the plan at t0 from a sampler that loses it. Writes
``<workdir>/eval/recovery_step<N>_<sampler><steps>_n<inputs>[_<split>].json``.
"""
import json
import os

from absl import flags

from diffusion_text import evaluate, generate
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A diffusion run.")
_T0 = flags.DEFINE_list("t0", ["500", "1000", "1500", "1800", "2000"], "Start noise levels.")
_NUM = flags.DEFINE_integer("num_inputs", 64, "Held-out examples (every 10th of the split).",
                            lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 20, "Sampler steps from t0 to 0.", lower_bound=1)
_SAMPLER = flags.DEFINE_string("sampler", "dpm++2m", "ddpm | ddim | dpm++2m.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Held-out split.")
_LAYERS = common.define_layers_flag()
_CHECKPOINT = common.define_checkpoint_flag()
flags.mark_flags_as_required(["workdir"])


def run():
  r = generate.load_run(_WORKDIR.value, _CHECKPOINT.value,
                        scan_layers=common.scan_layers(_LAYERS.value))
  if r.config.model.family != "diffusion":
    raise common.UserError(f"{_WORKDIR.value} is not a diffusion run")
  try:
    rows = evaluate.recovery(r, [int(t) for t in _T0.value], _NUM.value, _STEPS.value,
                             _SAMPLER.value, _SPLIT.value)
  except ValueError as e:
    raise common.UserError(str(e)) from e
  result = {"workdir": _WORKDIR.value, "step": r.step, "sampler": _SAMPLER.value,
            "steps": _STEPS.value, "split": _SPLIT.value, "num_inputs": _NUM.value, "rows": rows}
  # every setting that changes the numbers is in the name, so other settings never overwrite it
  name = f"recovery_step{r.step}_{_SAMPLER.value}{_STEPS.value}_n{_NUM.value}" + (
      "" if _SPLIT.value == "validation" else f"_{_SPLIT.value}")
  path = os.path.join(_WORKDIR.value, "eval", name + ".json")
  common.write_atomic(path, json.dumps(result, indent=2))
  for row in rows:
    print(f"t0={row['t0']:>5}  alpha_bar={row['alpha_bar']:.3f}  BLEU {row['bleu']:5.1f}  "
          f"one-step BLEU {row['one_step_bleu']:5.1f}  token acc {row['token_acc']:.3f}  "
          f"{row['example']}")
  print(f"wrote {path}")


if __name__ == "__main__":
  common.run_app(run)
