"""Errors caused by what the user gave us, and how command-line tools report them.

Anything the user can fix (a config value, a missing dataset, a corrupt file or
checkpoint, a diverged run) raises a `UserError` subclass with a message that says what
went wrong and what to do. Command-line entry points wrap their `main` in `cli_main`, so
such an error ends the program with that one message instead of a traceback.
"""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
  """An error in the user's input; its message alone is shown."""


class ConfigError(UserError, ValueError):
  """A config value is out of range or unknown."""


class DataError(UserError):
  """A dataset is missing or an input file cannot be read."""


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt, or incompatible with the config."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite."""


def cli_main(main):
  """Wraps an absl `main(argv)` so that a UserError exits with its message, status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)

  return wrapped
