r"""Autoregressive baseline for E2E MR -> text: same data packing, tokenizer, width and depth as
``e2e_diffuseq.py``, a prefix-LM Transformer trained by next-token cross-entropy, decoded greedily or
with beam search (for this family ``--steps`` is the beam size).

    python -m experiments.train --config configs/e2e_ar_baseline.py:cpu --workdir runs/e2e_ar_cpu \
        --stop_at_step 1200
    python -m experiments.evaluate --workdir runs/e2e_ar_cpu --split validation --sampler greedy
    python -m experiments.evaluate --workdir runs/e2e_ar_cpu --split validation --sampler beam --steps 4
    python -m experiments.evaluate --workdir runs/e2e_ar_cpu --split test --sampler beam --steps 4

``:cpu`` on the 2-core AMD EPYC CPU alone: 1,200 steps in 12 min; E2E test BLEU 63.6 beam 4 (630
MRs, all references; dev 68.9).

As the diffusion recipe's teacher, with names and food copied (2-core Intel Xeon CPU, 1,200 steps
in 1,065 s; test BLEU 64.3 greedy; docs/results/recipe.md):

    python -m experiments.train --config configs/e2e_ar_baseline.py:cpu --workdir runs/ar_delex \
        --config.data.delex=name,near,food --stop_at_step 1200
"""
from configs import e2e_diffuseq


def get_config(arg=None):
  # the CPU variant: the 4 x 128 sizes and schedule of e2e_diffuseq.py:cpu_nosc
  c = e2e_diffuseq.get_config("cpu_nosc" if arg == "cpu" else arg)
  with c.unlocked():
    c.model.family = "ar"
    c.diffusion.loss_on_pad = False  # next-token loss up to and including EOS
    c.eval.update(sampler="greedy", sample_steps=1)
    c.sample.update(sampler="beam", steps=4, beam_alpha=0.6)
  c.lock()
  return c
