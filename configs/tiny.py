"""Tiny config for tests: a 2-layer width-32 model on the first 256 E2E sentences, T=100.

    python -m experiments.train --config configs/tiny.py --workdir /tmp/tiny
    python -m experiments.train --config configs/tiny.py:seq2seq --workdir /tmp/tiny_s2s  # MR -> text
                                            # (with self-conditioning and a soft absorbing state)
    python -m experiments.train --config configs/tiny.py:ar --workdir /tmp/tiny_ar  # AR baseline
    python -m experiments.train --config configs/tiny.py:classifier \
        --config.classifier.base_run=/tmp/tiny --workdir /tmp/tiny_clf  # guidance classifier
    python -m experiments.train --config configs/tiny.py:cfg --workdir /tmp/tiny_cfg
        # seq2seq with the softmax x0 head, denoiser cross-entropy and condition dropout
"""
from configs import common


def get_config(arg=None):
  c = common.get_config()
  c.data.dataset = "e2e"
  c.data.max_len = 32
  c.data.max_train_examples = 256
  c.data.max_eval_examples = 64
  c.model.update(emb_dim=8, width=32, num_layers=2, num_heads=2, mlp_dim=64)
  c.diffusion.num_steps = 100
  c.optim.update(learning_rate=1e-3, warmup_steps=2)
  c.train.update(batch_size=8, num_train_steps=6, log_every_steps=2, eval_every_steps=6,
                 checkpoint_every_steps=3)
  c.eval.update(batch_size=8, num_batches=2, num_samples=2, sample_steps=10, nll_t=4)
  c.sample.update(steps=10, batch_size=8)
  if arg in ("seq2seq", "ar", "cfg"):
    # the fixture's longest MRs are cut to 20 tokens: short sequences keep the tests fast
    c.data.update(task="seq2seq", max_len=48, max_src_len=20, cut_sources=True)
    if arg == "seq2seq":  # the seq2seq tests also exercise self-conditioning and soft absorbing
      c.model.self_cond = True
      c.diffusion.absorb_prob = 0.3
  if arg == "cfg":
    c.model.x0_head = "softmax"
    c.diffusion.update(ce_weight=1.0, cond_drop_prob=0.5)
  if arg == "classifier":
    c.model.family = "classifier"
    c.train.num_train_steps = 30
    c.eval.update(num_samples=0, sampler="none")
    c.sample.sampler = "none"
  if arg == "ar":
    c.model.family = "ar"
    c.eval.sampler = "greedy"
    c.sample.update(sampler="beam", steps=2)
  elif arg not in (None, "", "seq2seq", "cfg", "classifier"):
    raise ValueError(f"unknown variant {arg!r}; use '', 'seq2seq', 'cfg', 'classifier' or 'ar'")
  c.lock()
  return c
