r"""The steps/quality curve: BLEU and dist-1 of each sampler at several step counts, for a few runs.

    python -m experiments.steps_study --workdirs runs/e2e_diffuseq_sc,runs/e2e_diffuseq_cpu \
        --samplers ddpm,ddim,dpm++2m --steps 5,10,20,50,100,200,2000 --num_inputs 100

Writes ``<out>.json`` (every point with its settings), ``<out>.md`` (a table) and ``<out>.png``
(BLEU against steps, one line per run and sampler); default ``--out runs/steps_study``. Runs are
labelled by their workdir and whether they use self-conditioning. Select on the dev split; the test
split is for the final numbers only.
"""
import io
import json
import os

from absl import flags, logging

from diffusion_text import evaluate, generate
from experiments import common

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Run directories (comma-separated).")
_SAMPLERS = flags.DEFINE_list("samplers", ["ddpm", "ddim", "dpm++2m"], "Samplers to compare.")
_STEPS = flags.DEFINE_list("steps", ["5", "10", "20", "50", "100", "200", "2000"], "Step counts.")
_NUM = flags.DEFINE_integer("num_inputs", 100, "Distinct held-out inputs per point (0 = all).",
                            lower_bound=0)
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Held-out split.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every point).")
_OUT = flags.DEFINE_string("out", "runs/steps_study", "Output path prefix (without extension).")
_LAYERS = common.define_layers_flag()
flags.mark_flags_as_required(["workdirs"])


def label(run) -> str:
  sc = "self-cond" if run.config.model.self_cond else "no self-cond"
  return f"{os.path.basename(os.path.normpath(run.workdir))} (step {run.step}, {sc})"


def markdown(points: list[dict]) -> str:
  steps = sorted({p["steps"] for p in points})
  lines = ["| run | sampler | " + " | ".join(f"{k} steps" for k in steps) + " |",
           "| --- | --- | " + " | ".join("---" for _ in steps) + " |"]
  for (run, sampler) in dict.fromkeys((p["run"], p["sampler"]) for p in points):
    by = {p["steps"]: p for p in points if p["run"] == run and p["sampler"] == sampler}
    cells = [f"{by[k]['bleu']:.1f} / {by[k]['dist_1']:.2f}" if k in by else "" for k in steps]
    lines.append(f"| {run} | {sampler} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\nCells: corpus BLEU / dist-1.\n"


def plot(points: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for (run, sampler) in dict.fromkeys((p["run"], p["sampler"]) for p in points):
    pts = sorted((p["steps"], p["bleu"]) for p in points
                 if p["run"] == run and p["sampler"] == sampler)
    ax.plot([s for s, _ in pts], [b for _, b in pts], marker="o", label=f"{sampler}: {run}")
  ax.set_xscale("log")
  ax.set_xlabel("sampler steps")
  ax.set_ylabel("corpus BLEU")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=120)
  plt.close(fig)
  common.write_atomic(path, png.getvalue())


def run():
  steps = [int(s) for s in _STEPS.value]
  points = []
  for workdir in _WORKDIRS.value:
    r = generate.load_run(workdir, scan_layers=common.scan_layers(_LAYERS.value))
    if not r.is_seq2seq:
      raise common.UserError(f"{workdir} is not a seq2seq run: the study scores against references")
    for sampler in _SAMPLERS.value:
      for k in steps:
        try:
          result, _ = evaluate.evaluate_run(r, split=_SPLIT.value, num_inputs=_NUM.value,
                                            seed=_SEED.value, sampler=sampler, steps=k)
        except ValueError as e:
          raise common.UserError(str(e)) from e
        points.append({"run": label(r), "workdir": workdir, "sampler": sampler, "steps": k,
                       **{m: result[m] for m in ("bleu", "dist_1", "rouge_l", "mean_len",
                                                 "num_inputs", "seconds", "checkpoint_step")}})
        logging.info("%s %s %d steps: BLEU %.2f dist-1 %.3f (%.0fs)", label(r), sampler, k,
                     result["bleu"], result["dist_1"], result["seconds"])
  common.write_atomic(_OUT.value + ".json", json.dumps(points, indent=2))
  common.write_atomic(_OUT.value + ".md", markdown(points))
  plot(points, _OUT.value + ".png")
  print(markdown(points))
  logging.info("wrote %s.{json,md,png}", _OUT.value)


if __name__ == "__main__":
  common.run_app(run)
