r"""Word classifier on the noisy embeddings of an E2E Diffusion-LM (classifier guidance).

Names the clean word at every position from x_t at any noise level (t uniform in {0..T}); reads the
frozen EMA embedding table, noise schedule and tokenizer of the diffusion run named by
``classifier.base_run``, an unconditional E2E run (``configs/e2e_diffusion_lm.py``; its data
settings, same dataset and max_len 64, are repeated here). A 2-layer width-128 trunk:

    python -m experiments.train --config configs/e2e_word_classifier.py \
        --config.classifier.base_run=runs/e2e_cpu --workdir runs/e2e_word_clf
    python -m experiments.evaluate --workdir runs/e2e_word_clf --evaluators classifier_accuracy

Measured on a 2-core AMD EPYC CPU, base run ``runs/e2e_cpu``: 800 steps in 531 s; eval
per-position accuracy 0.787 (all t). Its use for semantic control: docs/control.md.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.get_config()
  c.data.update(dataset="e2e", tokenizer="word", min_count=10, max_len=64)
  c.model.update(family="classifier", emb_dim=16, width=128, num_layers=2, num_heads=4,
                 mlp_dim=512, dropout=0.1)
  c.classifier.labels = "words"
  c.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine", final_lr_fraction=0.05)
  c.train.update(batch_size=64, num_train_steps=800, log_every_steps=100, eval_every_steps=500,
                 checkpoint_every_steps=500, ema_decay=0.99)
  c.eval.update(num_samples=0, sampler="none")
  c.sample.update(sampler="none")
  c.lock()
  return c
