r"""DiffuSeq (Gong et al. 2023) on E2E MR -> text: partial noising of the target, source re-anchored.

Packed as ``[BOS] MR [SEP] text [EOS] PAD...`` with L=96 and at most 44 MR tokens (the longest MR in
the train split has 43 word tokens; 99% of texts fit in the 49-token target region). Word vocabulary
(count >= 10) over MRs and texts. The loss is on target positions only, PAD included (the model chooses
the output length by predicting PAD).

Default (``get_config()``), DiffuSeq's hyperparameters scaled to E2E: T=2000 sqrt schedule, 12-layer
width-768 denoiser, embedding dim 128, lr 1e-4, batch 64 (an accelerator job):

    python -m experiments.train --config configs/e2e_diffuseq.py --workdir runs/e2e_diffuseq

CPU variant (``:cpu``), sized for the 2-core CPU, with self-conditioning:

    python -m experiments.train --config configs/e2e_diffuseq.py:cpu --workdir runs/e2e_diffuseq_sc
    python -m experiments.evaluate --workdir runs/e2e_diffuseq_sc --split validation \
        --sampler dpm++2m --steps 20 --mbr_samples 10

Measured (``:cpu``, second session): started with 6,000 steps, resumed at step 1,401 with
``--config.train.num_train_steps=4500``; 4,500 steps in 103 min with tests sharing the cores (1.16
steps/s alone); eval loss 0.178; first 100 dev MRs: BLEU 1.5 (DPM-Solver++ 20, |S|=1), 2.0 (|S|=10);
right words and lengths, no word order yet (README "Results").

``:cpu_ce`` adds the softmax x0 head with the denoiser's cross-entropy (``model.x0_head=softmax``,
``diffusion.ce_weight=1``) and 10% condition dropout for classifier-free guidance:

    python -m experiments.train --config configs/e2e_diffuseq.py:cpu_ce --workdir runs/e2e_diffuseq_ce
    python -m experiments.control --task cfg --lm runs/e2e_diffuseq_ce --scales 0,1,2,3 \
        --sampler dpm++2m --steps 20 --num_inputs 100
    python -m experiments.recovery --workdir runs/e2e_diffuseq_ce

Measured (third session): started with 5,000 steps, resumed at 1,190 with
``--config.train.num_train_steps=3000``; 3,000 steps in 91 min of wall time sharing the cores with
other jobs (0.4-0.6 steps/s shared; ~1.1 alone); eval ce 0.575, mse 0.252. First 100 dev MRs: BLEU 1.2
(DPM-Solver++ 20), 1.5 (DDPM 200), 1.5 (MBR |S|=5); CFG scale 0/1/2/3: 0.9/1.2/1.4/1.9. Started from
q(x_t | x0) at t=500/1000/1500/2000 the same sampler recovers the target at 88.6/55.8/13.2/0.5 BLEU:
the failure is the high-noise regime (README "Results").

Measured (fourth session, one H100, the same ``:cpu_ce`` config for 12,000 steps in 512 s; README
"Results")::

    python -m experiments.train --config configs/e2e_diffuseq.py:cpu_ce --workdir runs/gpu_ce \
        --config.train.num_train_steps=12000 --config.train.eval_every_steps=3000 \
        --config.train.checkpoint_every_steps=3000 --config.train.log_every_steps=1000

all 547 dev MRs: BLEU 3.1 (DPM-Solver++ 20), 3.4 (|S|=5), 3.9 (DDPM 200, selected); test (630 MRs,
DDPM 200): 2.7; recovery from t=1500: 63.9, from T: 1.4.

Timestep emphasis (sixth session; README "Results"), 3,000 steps in 3,450 s:
    python -m experiments.train --config configs/e2e_diffuseq.py:cpu_ce --workdir runs/ce3k_tpow \
        --config.train.num_train_steps=3000 --config.diffusion.t_power=0.5
    python -m experiments.recovery --workdir runs/ce3k_tpow --t0 1000,1500,1800,1900,2000
held-out loss 0.813 (the :cpu_ce run at 3,000 steps: 0.829); first 100 dev MRs, DDPM 200: BLEU 1.7
(1.5); recovery and one-step accuracy at high noise unchanged.
The same with ``--workdir runs/ce3k_absorb --config.diffusion.absorb_prob=0.5`` (soft absorbing
state), stopped at 2,000 steps: BLEU 1.2 against the :cpu_ce run's 0.5 at its 2,000-step checkpoint;
token accuracy at T 0.03 (0.02); held-out loss (absorbing noise left out; ``python -m
experiments.evaluate --workdir W --checkpoint 2000 --evaluators loss``) 0.952 (0.886).
``:cpu_nosc`` is the first session's run (no self-conditioning, 10k-step schedule): SIGTERM at 1,940
steps (53 min shared), dev BLEU 0.9 (DDIM 50, |S|=1), 1.8 with |S|=5 on 100 MRs.
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
  if arg in ("cpu", "cpu_nosc", "cpu_ce"):
    # unrolled blocks: on this CPU nn.scan's backward costs ~16% of a step (README "Performance")
    c.model.update(emb_dim=16, width=128, num_layers=4, num_heads=4, mlp_dim=512, scan_layers=False)
    c.optim.update(learning_rate=1e-3, warmup_steps=500, decay="cosine", final_lr_fraction=0.05)
    c.train.update(num_train_steps=10_000, eval_every_steps=1000, checkpoint_every_steps=1000,
                   ema_decay=0.999)
    if arg in ("cpu", "cpu_ce"):
      c.model.self_cond = True
      c.train.num_train_steps = 6000
    if arg == "cpu_ce":
      c.model.x0_head = "softmax"
      c.diffusion.update(ce_weight=1.0, cond_drop_prob=0.1)
      c.train.num_train_steps = 5000
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r}; use '' (default), 'cpu', 'cpu_ce' or 'cpu_nosc'")
  c.lock()
  return c
