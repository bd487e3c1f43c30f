r"""Export a run for sampling: its config, tokenizer and the EMA parameters of one checkpoint.

    python -m experiments.export --workdir runs/study/tB_r15kf --checkpoint 4000 \
        --out diffusion_text/pretrained/e2e_recipe --dtype bfloat16

The exported directory (``diffusion_text.exported``) holds no optimizer state or history, so it is
a few MB where the run is tens; every command that samples or evaluates takes it as ``--workdir``.
"""
import json
import os

from absl import flags

from diffusion_text import exported, generate
from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by experiments.train.")
_OUT = flags.DEFINE_string("out", None, "Directory to write; must not exist.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", sorted(exported.DTYPES),
                           "How the parameters are stored (loaded back in the run's dtype).")
_CHECKPOINT = common.define_checkpoint_flag()
flags.mark_flags_as_required(["workdir", "out"])


def run():
  common.check_out("--out", _OUT.value)
  if os.path.exists(_OUT.value):
    raise common.UserError(f"--out {_OUT.value} exists; choose a new directory")
  r = generate.load_run(_WORKDIR.value, _CHECKPOINT.value, scan_layers=None)
  info = exported.write(_OUT.value, r.config, r.tokenizer, r.params, step=r.step,
                        source=_WORKDIR.value, dtype=_DTYPE.value)
  print(json.dumps(info, indent=2))
  print(f"wrote {_OUT.value}: step {info['step']}, {info['parameters']:,} parameters "
        f"({info['dtype']})")


if __name__ == "__main__":
  common.run_app(run)
