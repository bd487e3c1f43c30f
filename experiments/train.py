r"""Train (or resume) a diffusion LM.

    python -m experiments.train --config configs/e2e_diffusion_lm.py:cpu --workdir runs/e2e_cpu

Re-running the same command resumes from the newest checkpoint in --workdir.
"""
from absl import app, flags
from ml_collections import config_flags

from diffusion_text import train
from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
_STOP = flags.DEFINE_integer("stop_at_step", None,
                             "Checkpoint and exit at this step (time-boxed jobs); rerun to resume.")
_RESUME = flags.DEFINE_enum("resume", "latest", ["latest", "latest_valid"],
                            "latest: newest checkpoint or fail; latest_valid: newest readable one.")
_ALLOW = flags.DEFINE_bool("allow_config_change", False,
                           "Resume although the config differs from the run's saved config.")
flags.mark_flags_as_required(["config", "workdir"])


def run():
  train.train_and_evaluate(common.validated(_CONFIG.value), _WORKDIR.value,
                           stop_at_step=_STOP.value, resume=_RESUME.value,
                           allow_config_change=_ALLOW.value)


if __name__ == "__main__":
  app.run(common.main_for(run))
