"""The language bench's base arm: a 3-layer width-128 diffusion LM on synthetic languages
(``diffusion_text/langbench.py``; arms are overrides of this config).

    python -m experiments.langbench --arms base,ar --languages templates,markov,grammar

Hardware, time and results per arm: docs/results/langbench.md. ``:tiny`` (2 x 64, L 16) is the
model of the bench's test, which learns ``templates`` in about 45 s of a 2-core CPU.
"""
from configs import common


def get_config(arg=None):
  c = common.get_config()
  c.data.task = "lm"
  c.data.max_len = 32
  c.model.update(emb_dim=16, width=128, num_layers=3, num_heads=4, mlp_dim=512, dropout=0.0,
                 scan_layers=False)
  c.diffusion.update(schedule="sqrt", num_steps=2000)
  c.optim.update(learning_rate=1e-3, warmup_steps=200, decay="cosine", final_lr_fraction=0.05)
  c.train.update(batch_size=64, num_train_steps=2000, ema_decay=0.999)
  c.sample.update(sampler="ddpm", steps=200, batch_size=100)
  if arg == "tiny":  # the test's model (tests/test_langbench.py): 2 x 64, L 16
    c.data.max_len = 16
    c.model.update(width=64, num_layers=2, num_heads=2, mlp_dim=256)
    c.optim.learning_rate = 2e-3
    c.sample.steps = 100
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' or 'tiny'")
  c.lock()
  return c
