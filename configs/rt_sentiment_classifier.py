r"""Sentiment (fresh/rotten) classifier on the noisy embeddings of the review-snippet demo model.

``:judge`` is the same classifier trained on clean text only (``classifier.max_t = 0``), a separate
judge of finished outputs for sentiment control:

    python -m experiments.train --config configs/demo_rt_snippets.py --workdir runs/demo
    python -m experiments.train --config configs/rt_sentiment_classifier.py \
        --config.classifier.base_run=runs/demo --workdir runs/rt_sentiment_clf
    python -m experiments.train --config configs/rt_sentiment_classifier.py:judge \
        --config.classifier.base_run=runs/demo --workdir runs/rt_sentiment_judge
    python -m experiments.evaluate --workdir runs/demo --evaluators sentiment \
        --classifier runs/rt_sentiment_clf --judge runs/rt_sentiment_judge

Measured on a 2-core AMD EPYC CPU, on the 1,500-step demo model: 600 steps each, eval accuracy 0.59
and 0.62 (near the majority class). Sentiment control with them: docs/control.md.
"""
from configs import common


def get_config(arg=None):
  c = common.get_config()
  c.data.update(dataset="rt_snippets", tokenizer="sentencepiece", vocab_size=2000, max_len=48)
  c.model.update(family="classifier", emb_dim=16, width=128, num_layers=2, num_heads=4,
                 mlp_dim=512, dropout=0.1)
  c.diffusion.num_steps = 1000  # the base run's T (the classifier reads its schedule from the run)
  c.classifier.update(labels="label", num_classes=2)
  c.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine", final_lr_fraction=0.05)
  c.train.update(batch_size=64, num_train_steps=600, log_every_steps=100, eval_every_steps=300,
                 checkpoint_every_steps=300, ema_decay=0.99)
  c.eval.update(batch_size=64, num_samples=0, sampler="none")
  c.sample.sampler = "none"
  if arg == "judge":
    c.classifier.max_t = 0
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' or 'judge'")
  c.lock()
  return c
