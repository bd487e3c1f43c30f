"""Diffusion-LM (Li et al. 2022) on E2E, unconditional: the paper's hyperparameters and a CPU variant.

Paper (default, ``get_config()``): T=2000 sqrt schedule, embedding dim 16, BERT-base-sized denoiser
(12 layers, width 768), lr 1e-4 with linear decay, batch 64, L=64, 200k steps, EMA 0.9999, word
vocabulary of words seen >= 10 times.

    python -m experiments.train --config configs/e2e_diffusion_lm.py --workdir runs/e2e_paper

``:cpu``: the same data, schedule, T, E and L, a 4-layer width-128 denoiser with rotary positions,
the softmax x0 head with cross-entropy and self-conditioning, a higher learning rate, 14,000 steps,
sampled at logit temperature 0.5 on a grid crowded toward T (power 1.5): 112 min on a 2-core AMD
EPYC CPU (its first 25 min beside short tests), evaluation 1 min; lm-score 7.9 of 200 samples
(DDPM 200; real dev text 6.1), dist-1 0.064 (real 0.065). docs/results/recipe.md, "14,000 steps".

    python -m experiments.train --config configs/e2e_diffusion_lm.py:cpu --workdir runs/e2e_cpu
    python -m experiments.train --config configs/e2e_ar_baseline.py:cpu --workdir runs/uncond/ar_lm \
        --config.data.task=lm --config.data.max_len=64 --config.data.max_src_len=0 \
        --config.train.num_train_steps=1000 --config.eval.num_samples=0
    python -m experiments.evaluate --workdir runs/e2e_cpu --num_inputs 200 --sampler ddpm --steps 200 \
        --lm_teacher runs/uncond/ar_lm

``:cpu_plain``: the paper's objective at the CPU size, without those three levers, 6,000 steps in
4,779 s on a 2-core AMD EPYC CPU (shared): eval loss 0.173 (mse 0.159, rounding 0.014); word salad
(docs/results.md). The base model of docs/control.md.

    python -m experiments.train --config configs/e2e_diffusion_lm.py:cpu_plain --workdir runs/e2e_cpu_plain
"""
from configs import common


def get_config(arg=None):
  c = common.get_config()
  c.data.dataset = "e2e"
  c.data.tokenizer = "word"
  c.data.min_count = 10
  c.data.max_len = 64
  c.model.update(emb_dim=16, width=768, num_layers=12, num_heads=12, mlp_dim=3072, dropout=0.1)
  c.diffusion.update(schedule="sqrt", num_steps=2000, loss_on_pad=True)
  c.optim.update(learning_rate=1e-4, warmup_steps=0, decay="linear")
  c.train.update(batch_size=64, num_train_steps=200_000, log_every_steps=100,
                 eval_every_steps=5000, checkpoint_every_steps=5000, ema_decay=0.9999)
  c.eval.update(batch_size=64, num_batches=8, num_samples=8, sampler="ddim", sample_steps=200)
  if arg in ("cpu", "cpu_plain"):
    # unrolled blocks: on this CPU nn.scan's backward costs ~16% of a step (README "Performance")
    c.model.update(width=128, num_layers=4, num_heads=4, mlp_dim=512, scan_layers=False)
    c.optim.update(learning_rate=1e-3, warmup_steps=500, decay="cosine", final_lr_fraction=0.05)
    c.train.update(num_train_steps=6000, log_every_steps=100, eval_every_steps=500,
                   checkpoint_every_steps=1000, ema_decay=0.999)
    if arg == "cpu":
      c.model.update(rope=True, x0_head="softmax", self_cond=True)
      c.diffusion.ce_weight = 1.0
      c.train.num_train_steps = 14000
      c.sample.update(logit_temp=0.5, grid_power=1.5)
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' (paper), 'cpu' or 'cpu_plain'")
  c.lock()
  return c
