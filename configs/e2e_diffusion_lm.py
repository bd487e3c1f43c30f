"""Diffusion-LM (Li et al. 2022) on E2E, unconditional: the paper's hyperparameters and a CPU variant.

Paper (default, ``get_config()``): T=2000 sqrt schedule, embedding dim 16, BERT-base-sized denoiser
(12 layers, width 768), lr 1e-4 with linear decay, batch 64, L=64, 200k steps, EMA 0.9999, word
vocabulary of words seen >= 10 times.

    python -m experiments.train --config configs/e2e_diffusion_lm.py --workdir runs/e2e_paper

CPU variant (``:cpu``): same objective, data, schedule, T, E and L; a 4-layer width-128 denoiser and a
higher learning rate.

    python -m experiments.train --config configs/e2e_diffusion_lm.py:cpu --workdir runs/e2e_cpu

Measured on a 2-core AMD EPYC CPU (Zen 3, float32), ``:cpu``, full E2E train split (42,061
sentences): 951k parameters, 6,000 steps in 4,779 s; eval loss 0.173 (mse 0.159, rounding 0.014).
Samples and the loss curve: docs/results.md.
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
  if arg == "cpu":
    # unrolled blocks: on this CPU nn.scan's backward costs ~16% of a step (README "Performance")
    c.model.update(width=128, num_layers=4, num_heads=4, mlp_dim=512, scan_layers=False)
    c.optim.update(learning_rate=1e-3, warmup_steps=500, decay="cosine", final_lr_fraction=0.05)
    c.train.update(num_train_steps=6000, log_every_steps=100, eval_every_steps=500,
                   checkpoint_every_steps=1000, ema_decay=0.999)
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' (paper) or 'cpu'")
  c.lock()
  return c
