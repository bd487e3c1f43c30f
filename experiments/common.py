"""What every absl main shares: one-line errors for bad input, and config validation."""
import sys

from absl import app, flags, logging

from configs import common as base_config
from diffusion_text import configuration
from diffusion_text.errors import UserError  # noqa: F401 (re-exported)
from diffusion_text.runs import write_atomic  # noqa: F401 (re-exported for the mains)


def validated(config):
  configuration.validate(config, base_config.get_config())
  return config


_LAYOUTS = {"as_trained": None, "scan": True, "unrolled": False}  # --layers -> load_run's scan_layers


def define_layers_flag():
  """``--layers``: run the blocks scanned or unrolled at sampling time, whatever the run trained
  with (``generate.load_run(scan_layers=...)``; the parameters convert exactly, the two layouts'
  outputs agree up to float rounding)."""
  return flags.DEFINE_enum(
      "layers", "auto", ["auto", *_LAYOUTS],
      "Block layout to sample with: scan, unrolled, as_trained, or auto = scan on CPU (where a "
      "scanned denoiser step is 15-25% faster; README \"Performance\"), as trained elsewhere.")


def scan_layers(layers: str):
  """``generate.load_run``'s ``scan_layers`` for a ``--layers`` value (None = as trained)."""
  if layers == "auto":
    import jax
    return True if jax.default_backend() == "cpu" else None
  return _LAYOUTS[layers]


def quiet_libraries():
  """Keep orbax/tfds INFO chatter out of the progress log."""
  import logging as std_logging

  class _DropLibraryInfo(std_logging.Filter):
    def filter(self, record):
      noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
      return record.levelno >= std_logging.WARNING or not noisy

  std_logging.getLogger("absl").addFilter(_DropLibraryInfo())


def run_main(fn, *args):
  """Calls ``fn``; bad input becomes one line on stderr and exit status 1."""
  quiet_libraries()
  try:
    return fn(*args)
  except UserError as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:  # a second Ctrl-C during training, or one anywhere else
    logging.flush()
    print("error: interrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)


def main_for(fn):
  """An absl ``main`` that takes no positional arguments and runs ``fn`` through ``run_main``."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    run_main(fn)
  return main


def define_checkpoint_flag():
  """``--checkpoint``: which saved step of the run to load (default: the latest)."""
  return flags.DEFINE_integer("checkpoint", None, "Checkpoint step to load (default: the latest).")
