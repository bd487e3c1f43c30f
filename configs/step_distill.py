"""Progressive distillation of a trained diffusion run: a student with half its teacher's DDIM steps.

``TEACHER[,K]``: the teacher's workdir and the student's steps K (the teacher samples 2K; K may be
left out when the teacher is itself a student: half its steps). The student is the teacher's model
and data, started from its parameters, sampling DDIM on every other point of the teacher's grid.

    python -m experiments.train --config configs/step_distill.py:runs/uncond/w14k,10 \
        --workdir runs/uncond/pd10 --config.eval.num_samples=0
    python -m experiments.evaluate --workdir runs/uncond/pd10 --num_inputs 200 \
        --lm_teacher runs/uncond/ar_lm
    python -m experiments.train --config configs/step_distill.py:runs/uncond/pd10 \
        --workdir runs/uncond/pd5                         # the next round: 5 steps

One round (800 steps) from the unconditional `e2e_diffusion_lm.py:cpu` model (runs/uncond/w14k,
DDIM 20 at logit temperature 0.5) to 10 steps: 446 s on a 2-core AMD EPYC CPU; lm-score 22.9 of
200 samples at DDIM 10, against the teacher's 26.5 at 10 steps and 17.3 at 20 (docs/performance.md,
"Progressive distillation").
"""
from diffusion_text import defaults, runs, step_distill


def get_config(arg=None):
  teacher, _, steps = (arg or "").partition(",")
  if not teacher:
    raise ValueError("use configs/step_distill.py:TEACHER_WORKDIR[,K]")
  saved = runs.load_config(teacher)
  c = defaults.get_config()
  for key, value in c.items():  # the teacher's settings, keys since retired left out
    if key not in saved:
      continue
    if hasattr(value, "items"):
      value.update({k: v for k, v in saved[key].items() if k in value})
    else:
      c[key] = saved[key]
  own = list(saved.sample.get("grid", []))
  if not steps and not own:
    raise ValueError(f"{teacher} is not a distilled student: give the student's steps, "
                     f"configs/step_distill.py:{teacher},K")
  if steps and not steps.isdigit():
    raise ValueError(f"the student's steps K must be a whole number, got {steps!r}")
  k = int(steps) if steps else (len(own) - 1) // 2
  grid = step_distill.teacher_grid(saved.sample, saved.diffusion.num_steps, k)
  c.step_distill.update(teacher_run=teacher, steps=k)
  c.sample.update(grid=[int(t) for t in step_distill.student_grid(grid)], steps=k,
                  sampler="ddim", eta=0.0, logit_temp=1.0, grid_power=1.0, clamp=False,
                  score_temp=1.0, commit=False)
  c.diffusion.update(t_sampler="uniform", t_power=1.0)  # the student draws its teacher's intervals
  c.eval.update(sampler="ddim", sample_steps=k, clamp=False, nll_t=0)
  c.model.dropout = 0.0
  c.optim.update(learning_rate=3e-4, warmup_steps=0, decay="linear", final_lr_fraction=0.0,
                 weight_decay=0.0)
  c.train.update(num_train_steps=800, eval_every_steps=400, checkpoint_every_steps=400,
                 log_every_steps=50)
  c.lock()
  return c
