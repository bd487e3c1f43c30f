"""What every absl main shares: one-line errors for bad input, and config validation."""
import os
import re
import sys
import warnings

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


def quiet_libraries(debug: bool = False):
  """Keep orbax/tfds INFO chatter out of the progress log; without ``debug``, log records carry no
  traceback and a failing background thread (orbax's asynchronous writes, asyncio callbacks) is one
  warning line, so an ``error:`` line is not buried under library tracebacks (a full disk)."""
  import logging as std_logging
  import threading

  class _Quiet(std_logging.Filter):
    def filter(self, record):
      noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
      if record.levelno < std_logging.WARNING and noisy:
        return False
      if not debug and record.exc_info:
        e = record.exc_info[1]
        record.msg = f"{record.getMessage()} ({_one_line(e) if e else 'no exception'})"
        record.args, record.exc_info, record.exc_text = None, None, None
      return True

  quiet = _Quiet()
  std_logging.getLogger("absl").addFilter(quiet)
  for handler in std_logging.getLogger().handlers:  # absl's handler: records of every logger
    handler.addFilter(quiet)
  if not debug:
    def thread_failed(args):
      logging.warning("background thread %s failed: %s (--debug shows the traceback)",
                      getattr(args.thread, "name", "?"), _one_line(args.exc_value))
    threading.excepthook = thread_failed

    sys.unraisablehook = _unraisable
    # the coroutines of an aborted asynchronous checkpoint write (orbax's write_fragment, after a
    # full disk) are dropped unawaited at exit; Python's warning about them would follow the
    # error: line (--debug shows it)
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)


def _unraisable(args):
  """Exceptions Python ignores (raised in ``__del__``, in callbacks at shutdown): orbax's asyncio
  leftovers ("Event loop is closed", one per pending future of a finished run) are dropped, any
  other is one warning line; --debug shows all of them with tracebacks."""
  e = args.exc_value
  if isinstance(e, RuntimeError) and "Event loop is closed" in str(e):
    return
  logging.warning("exception ignored in %s: %s (--debug shows the traceback)",
                  getattr(args, "object", None) or "?", _one_line(e) if e else args.exc_type)


_DEBUG = flags.DEFINE_bool("debug", False,
                           "Show the Python traceback of an error instead of its one-line summary.")


def _one_line(e: BaseException) -> str:
  text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
  return text if isinstance(e, UserError) else f"{type(e).__name__}: {text}"


def _fail(message: str, status: int):
  import logging as std_logging
  import threading
  logging.flush()
  sys.stdout.flush()
  print(f"error: {message}", file=sys.stderr, flush=True)
  # the error line stays last: library objects that fail as the interpreter shuts down (asyncio
  # futures of an aborted checkpoint write) log nothing more
  std_logging.disable(std_logging.CRITICAL)
  threading.excepthook = sys.unraisablehook = lambda args: None
  sys.exit(status)


def run_main(fn, *args):
  """Calls ``fn``. Bad input (a UserError) becomes one ``error:`` line on stderr, the last thing
  printed, and exit status 1; so does any other exception (config files that fail to load, unknown
  override keys, OS errors), naming its type, unless ``--debug`` asks for the traceback."""
  quiet_libraries(debug=_DEBUG.value)
  try:
    return fn(*args)
  except UserError as e:
    _fail(_one_line(e), 1)
  except KeyboardInterrupt:  # a second Ctrl-C during training, or one anywhere else
    _fail("interrupted (Ctrl-C)", 130)
  except Exception as e:  # pylint: disable=broad-except
    if _DEBUG.value:
      raise
    _fail(f"{_one_line(e)} (--debug shows the traceback)", 1)


def main_for(fn):
  """An absl ``main`` that takes no positional arguments and runs ``fn`` through ``run_main``."""
  def main(argv):
    if len(argv) > 1:
      _fail(f"unexpected arguments: {argv[1:]}", 2)
    logging.set_verbosity(logging.INFO)
    run_main(fn)
  return main


def _config_arg(argv):
  """The value of ``--config=X`` or ``--config X`` in ``argv`` (None when absent)."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a[len("--config="):]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_flags(argv):
  """absl's flag parser, with a bad flag value (or a config override naming an unknown key) as one
  ``error:`` line and exit status 2."""
  path = _config_arg(argv)  # a config file that is not there: say so, before absl loads it
  if path is not None and not os.path.isfile(path.split(":", 1)[0]):
    _fail(f"config file {path.split(':', 1)[0]} not found", 2)
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if "--debug" in argv:
      raise
    raw = str(e).replace("\\'", "'").replace("\\n", "\n")
    if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an override of an unknown key
      names = re.findall(r"'(\w+)'", raw)
      overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
      key = next((o for o in overrides if names and names[0] in o.split(".")),
                 names[0] if names else raw)
      hint = re.search(r"[Dd]id you mean[^\n]*", raw)
      text = f"unknown config key in an override: {key}"
      if hint:
        text += " (" + hint.group(0).strip("'\" .") + ")"
    elif "Traceback (most recent call last)" in raw:  # the config file's get_config raised
      last = [line.strip() for line in raw.splitlines() if line.strip()][-1]
      text = f"config {_config_arg(argv)}: {last}"
    else:
      text = _one_line(e).replace("\\'", "'").replace("\\n", " ")
    _fail(text, 2)


def run_app(fn):
  """``app.run`` for a main that is ``fn()`` with every error as one line."""
  app.run(main_for(fn), flags_parser=parse_flags)


def check_out(flag: str, prefix):
  """Raises UserError, before any work, if files cannot be written under the output prefix
  ``prefix`` (``--out``): an ancestor that is not a directory, or one that is not writable."""
  if not prefix:
    return
  d = os.path.dirname(os.path.abspath(prefix))
  while not os.path.exists(d):
    d = os.path.dirname(d)
  if not os.path.isdir(d):
    raise UserError(f"{flag} {prefix}: {d} is not a directory")
  if not os.access(d, os.W_OK):
    raise UserError(f"{flag} {prefix}: {d} is not writable")


def define_checkpoint_flag():
  """``--checkpoint``: which saved step of the run to load (default: the latest)."""
  return flags.DEFINE_integer("checkpoint", None, "Checkpoint step to load (default: the latest).",
                              lower_bound=0)
