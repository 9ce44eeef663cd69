"""Errors caused by what the user gave us.

Anything the user can fix (a config value, a missing dataset, a corrupt file or
checkpoint, a diverged run) raises a `UserError` subclass with a message that says what
went wrong and what to do. The command-line tools end such an error in one `error:`
line with exit status 2 (75 where another trainer holds the run directory) instead of
a traceback (mobilenet_jax/cli.py).
"""


class UserError(Exception):
  """An error in the user's input; its message alone is shown."""
  exit_status = 2  # As argparse: the command line or its inputs are wrong.


class ConfigError(UserError, ValueError):
  """A config value is out of range or unknown."""


class DataError(UserError):
  """A dataset is missing or an input file cannot be read."""


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt, or incompatible with the config."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite."""
