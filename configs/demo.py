"""The demo: the function words and punctuation of movie-review sentences, written around their
given content words (``rt_cloze`` with ``data.target_start=in_place``: only the blanks are noised).

``make demo`` runs:

    python -m experiments.train --config configs/demo.py --workdir runs/demo
    python -m experiments.evaluate --workdir runs/demo --num_inputs 100 --mbr_samples 4 --show 8

On the 2-core Intel Xeon CPU, alone: 9 min 3 s for both, data preparation included. The model writes
the original word in 42% of 626 validation blanks (BLEU 42.1); a count model of each blank's two
neighbours gets 36%, the most common blank word ('.') in every blank 15% (docs/results/demo.md).
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.get_config()
  c.data.update(dataset="rt_cloze", task="seq2seq", tokenizer="word", min_count=20, max_len=24,
                target_start="in_place")
  c.model.update(emb_dim=64, width=128, num_layers=4, num_heads=4, mlp_dim=512, scan_layers=False,
                 self_cond=False, rope=True, x0_head="softmax", logits_head="tied", emb_norm="l2",
                 emb_scale=0.125)
  c.diffusion.update(schedule="sqrt", num_steps=2000, loss_on_pad=True, ce_weight=1.0,
                     pad_weight=0.1)
  c.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine", final_lr_fraction=0.05)
  c.train.update(batch_size=32, num_train_steps=4800, log_every_steps=400, eval_every_steps=4800,
                 checkpoint_every_steps=1600, ema_decay=0.995)
  c.eval.update(batch_size=64, num_batches=2, num_samples=4, sampler="dpm++2m", sample_steps=20,
                clamp=True)
  c.sample.update(sampler="dpm++2m", steps=20, batch_size=64, clamp=True)
  c.lock()
  return c
