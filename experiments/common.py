"""What every absl main shares: one-line errors for bad input, and config validation."""
import sys

from absl import logging

from configs import common as base_config
from diffusion_text import configuration
from diffusion_text.errors import UserError  # noqa: F401 (re-exported)


def validated(config):
  configuration.validate(config, base_config.get_config())
  return config


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
