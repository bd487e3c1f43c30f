r"""DiffuSeq (Gong et al. 2023) on E2E MR -> text: partial noising of the target, source re-anchored.

Default (``get_config()``), DiffuSeq's hyperparameters scaled to E2E (an accelerator job): packed as
``[BOS] MR [SEP] text [EOS] PAD...``, L=96, at most 44 MR tokens, word vocabulary (count >= 10),
T=2000 sqrt schedule, 12 x 768 denoiser, embedding dim 128, lr 1e-4, batch 64:

    python -m experiments.train --config configs/e2e_diffuseq.py --workdir runs/e2e_diffuseq

CPU variants (4 x 128, E 16): ``:cpu`` is the recipe of docs/results/recipe.md, trained on an AR
teacher's outputs from ``experiments.distill``; ``:cpu_nosc`` is DiffuSeq's objective. ``:cpu``, 4,000 steps on the 2-core Intel Xeon CPU, 81 min alone with teacher and
distillation: E2E test BLEU 62.7 (630 MRs, DDPM 200, clamped, repeats collapsed):

    python -m experiments.train --config configs/e2e_ar_baseline.py:cpu --workdir runs/ar_delex \
        --config.data.delex=name,near,food --stop_at_step 1200
    python -m experiments.distill --teacher runs/ar_delex --out runs/data/e2e_dB_r15kf \
        --recombine 15000 --seed 0 --require_values name,near,food,Type,area \
        --heldout 500 --heldout_ignore name,near,food
    python -m experiments.train --config configs/e2e_diffuseq.py:cpu --workdir runs/study/tB_r15kf \
        --config.data.dataset=jsonl:e2e_dB_r15kf --config.data.source_dir=runs/data

``:cpu`` on the real references (no teacher) with rotary positions, 8,000 steps in 96 min on the
2-core AMD EPYC CPU alone: E2E test BLEU 50.8 (630 MRs, DPM-Solver++ 20, logit temperature 0.3,
MBR of 10, clamped, repeats collapsed; 3 min):

    python -m experiments.train --config configs/e2e_diffuseq.py:cpu --workdir runs/realref/rope8k \
        --config.train.num_train_steps=8000 --config.model.rope=True
    python -m experiments.evaluate --workdir runs/realref/rope8k --sampler dpm++2m --steps 20 \
        --logit_temp 0.3 --mbr_samples 10 --split test

``:cpu_nosc``, DiffuSeq's objective at the CPU size, 1,940 steps in 53 min on the 2-core AMD EPYC
CPU (shared with another run): E2E dev BLEU 0.9 (DDIM 50; docs/results.md):

    python -m experiments.train --config configs/e2e_diffuseq.py:cpu_nosc --workdir runs/e2e_diffuseq_cpu

``:ce``, the recipe at the default 12 x 768 size, on one NVIDIA H200, 5.4 min of training: E2E test
BLEU 53.7 (630 MRs, DDPM 200, clamped, repeats collapsed):

    python -m experiments.train --config configs/e2e_diffuseq.py:ce --workdir runs/e2e_ce \
        --config.data.dataset=jsonl:e2e_distilled --config.data.source_dir=runs/data
"""
from configs import common


def get_config(arg=None):
  c = common.get_config()
  c.data.update(dataset="e2e", task="seq2seq", tokenizer="word", min_count=10, max_len=96,
                max_src_len=44)
  c.model.update(emb_dim=128, width=768, num_layers=12, num_heads=12, mlp_dim=3072, dropout=0.1)
  c.diffusion.update(schedule="sqrt", num_steps=2000, loss_on_pad=True)
  c.optim.update(learning_rate=1e-4, warmup_steps=0, decay="linear")
  c.train.update(batch_size=64, num_train_steps=100_000, log_every_steps=100,
                 eval_every_steps=5000, checkpoint_every_steps=5000, ema_decay=0.9999)
  c.eval.update(batch_size=64, num_batches=8, num_samples=4, sampler="ddim", sample_steps=200)
  c.sample.update(sampler="ddim", steps=200)
  if arg == "ce":
    # the recipe at the default trunk size (12 x 768, as Diffusion-LM's E2E model)
    _recipe(c)
    c.model.dtype = "bfloat16"  # an accelerator variant (bf16 is slower than float32 on CPU)
    # the recipe's 1e-3 at width 128, scaled by 128/768 (rounded)
    c.optim.update(learning_rate=2e-4, warmup_steps=500, decay="cosine", final_lr_fraction=0.05)
    c.train.update(num_train_steps=6300, eval_every_steps=6300, checkpoint_every_steps=2100,
                   ema_decay=0.999)
  elif arg == "cpu_ce":
    raise ValueError("variant 'cpu_ce' is now called 'cpu' (the same configuration)")
  elif arg in ("cpu", "cpu_nosc"):
    # unrolled blocks: on this CPU nn.scan's backward costs ~16% of a step (README "Performance")
    c.model.update(emb_dim=16, width=128, num_layers=4, num_heads=4, mlp_dim=512, scan_layers=False)
    c.optim.update(learning_rate=1e-3, warmup_steps=500, decay="cosine", final_lr_fraction=0.05)
    c.train.update(num_train_steps=10_000, eval_every_steps=1000, checkpoint_every_steps=1000,
                   ema_decay=0.999)
    if arg == "cpu":
      _recipe(c)
      c.train.num_train_steps = 4000  # docs/results/recipe.md
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' (default), 'ce', 'cpu' or 'cpu_nosc'")
  c.lock()
  return c


def _recipe(c):
  """The levers of docs/results/recipe.md, shared by ``:cpu`` and ``:ce``. E is 16 at every size:
  the noise factor (emb_scale) is per coordinate and was measured at E = 16."""
  c.model.update(emb_dim=16, self_cond=True, x0_head="softmax", logits_head="full",
                 emb_norm="l2", emb_scale=0.125,  # noise factor 8
                 arch="encoder_decoder")
  c.data.update(target_start="fixed", delex="name,near,food")  # delex: values copied from the MR
  c.diffusion.update(ce_weight=1.0, cond_drop_prob=0.1, pad_weight=0.1)
  c.sample.update(clamp=True, collapse_repeats=True)
