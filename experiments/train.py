r"""Train (or resume) a diffusion LM.

    python -m experiments.train --config configs/e2e_diffusion_lm.py:cpu --workdir runs/e2e_cpu

Re-running the same command resumes from the newest checkpoint in --workdir.

Multi-host: run the same command on every host, adding ``--distributed=auto`` (Cloud TPU pods,
SLURM) or ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (README, "Scaling
out").
"""
from absl import flags
from ml_collections import config_flags

from diffusion_text import distributed, train
from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
_STOP = flags.DEFINE_integer("stop_at_step", None,
                             "Checkpoint and exit at this step (time-boxed jobs); rerun to resume.",
                             lower_bound=1)
_RESUME = flags.DEFINE_enum("resume", "latest", ["latest", "latest_valid"],
                            "latest: newest checkpoint or fail; latest_valid: newest readable one.")
_ALLOW = flags.DEFINE_bool("allow_config_change", False,
                           "Resume although the config differs from the run's saved config.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Start over in a --workdir that holds a run: its files are moved to "
    "WORKDIR/previous-<UTC time>/, never deleted.")
_DIST = flags.DEFINE_enum(
    "distributed", "off", ["off", "auto"],
    "auto: jax.distributed.initialize() detects the cluster (TPU pod, SLURM).")
_COORD = flags.DEFINE_string("coordinator_address", "",
                             "host:port of process 0, for an explicit multi-process start.")
_NPROC = flags.DEFINE_integer("num_processes", None,
                              "Processes in all (with --coordinator_address).", lower_bound=1)
_PID = flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes).",
                            lower_bound=0)
flags.mark_flags_as_required(["config", "workdir"])


def run():
  distributed.initialize(auto=_DIST.value == "auto", coordinator_address=_COORD.value,
                         num_processes=_NPROC.value, process_id=_PID.value)
  train.train_and_evaluate(common.validated(_CONFIG.value), _WORKDIR.value,
                           stop_at_step=_STOP.value, resume=_RESUME.value,
                           allow_config_change=_ALLOW.value, restart=_RESTART.value)


if __name__ == "__main__":
  common.run_app(run)
