r"""Sample text from a trained run (EMA parameters of its newest checkpoint).

    python -m experiments.sample --workdir runs/e2e_cpu --num_samples 20 --sampler ddim --steps 200

Writes ``<out>.txt`` (one sample per line) and ``<out>.jsonl`` (settings + text per sample); default
``<workdir>/samples/step<N>_<sampler><steps>_seed<S>``.
"""
import json
import os
import time

from absl import flags, logging

from diffusion_text import generate
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by experiments.train.")
_NUM = flags.DEFINE_integer("num_samples", 16, "Number of samples.", lower_bound=1)
_SAMPLER = flags.DEFINE_string(
    "sampler", None,
    "ddpm|ddim|dpm++2m (diffusion), greedy|beam|sample (ar); default: the run's sample.sampler.")
_STEPS = flags.DEFINE_integer("steps", None,
                              "Sampler steps in [1, T]; default the run's sample.steps.",
                              lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_CLAMP = flags.DEFINE_bool("clamp", None, "Clamping trick; default the run's sample.clamp.")
_COMMIT = flags.DEFINE_bool(
    "commit", None, "Fix the generated words a group per sampler step, most confident first "
    "(diffusion runs); default the run's sample.commit.")
_COLLAPSE = flags.DEFINE_bool(
    "collapse_repeats", None, "Keep one word of each run of a repeated word; default the run's "
    "sample.collapse_repeats.")
_ETA = flags.DEFINE_float("eta", None, "DDIM noise scale; default the run's sample.eta.",
                          lower_bound=0)
_STEP = flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to load (default newest).",
                             lower_bound=0)
_OUT = flags.DEFINE_string("out", None, "Output path prefix (without extension).")
_LAYERS = common.define_layers_flag()
flags.mark_flags_as_required(["workdir"])


def run():
  common.check_out("--out", _OUT.value)
  r = generate.load_run(_WORKDIR.value, _STEP.value,
                        scan_layers=common.scan_layers(_LAYERS.value))
  settings = dict(sampler=_SAMPLER.value or r.config.sample.sampler,
                  steps=_STEPS.value or r.config.sample.steps or r.config.diffusion.num_steps,
                  seed=_SEED.value,
                  clamp=r.config.sample.clamp if _CLAMP.value is None else _CLAMP.value,
                  eta=r.config.sample.eta if _ETA.value is None else _ETA.value,
                  commit=r.config.sample.commit if _COMMIT.value is None else _COMMIT.value,
                  collapse=(r.config.sample.collapse_repeats if _COLLAPSE.value is None
                            else _COLLAPSE.value))
  t0 = time.time()
  try:
    texts = r.generate(_NUM.value, **settings)
  except ValueError as e:
    raise common.UserError(str(e)) from e
  secs = time.time() - t0
  name = f"step{r.step}_{settings['sampler']}{settings['steps']}"
  name += "_clamp" if settings["clamp"] else ""
  name += "_commit" if settings["commit"] else ""
  name += f"_eta{settings['eta']}" if settings["eta"] else ""
  name += "_collapse" if settings["collapse"] else ""
  out = _OUT.value or os.path.join(_WORKDIR.value, "samples", f"{name}_seed{settings['seed']}")
  meta = dict(settings, checkpoint_step=r.step, num_samples=len(texts), seconds=round(secs, 2))
  common.write_atomic(out + ".txt", "".join(t + "\n" for t in texts))
  common.write_atomic(out + ".jsonl", "".join(json.dumps(dict(meta, index=i, text=t)) + "\n"
                                              for i, t in enumerate(texts)))
  for t in texts:
    print(t)
  logging.info("%d samples in %.1fs -> %s.txt", len(texts), secs, out)


if __name__ == "__main__":
  common.run_app(run)
