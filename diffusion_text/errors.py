"""Errors caused by user input; command-line mains print them as one line and exit non-zero."""


class UserError(Exception):
  """Bad input: config, data, workdir or checkpoint. The message names the problem."""


class ConfigError(UserError):
  """A config key is unknown, missing, of the wrong type or out of range."""


class DataError(UserError):
  """A dataset file is missing or malformed."""


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt or belongs to a different config."""


class NumericsError(UserError):
  """A loss or gradient became NaN/Inf."""
