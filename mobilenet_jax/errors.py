"""Errors caused by what the user gave us, and how command-line tools report them.

Anything the user can fix (a config value, a missing dataset, a corrupt file or
checkpoint, a diverged run) raises a `UserError` subclass with a message that says what
went wrong and what to do. Command-line entry points start with `run(main)` (or wrap
their `main` in `cli_main` and pass it to `run`), so that such an error, and any error
in the command line itself (an unknown flag, a config file that is missing or rejects
its arguments, an unknown `--config.` key), ends the program with one line on stderr
and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import re
import sys
import traceback

USAGE_STATUS = 2  # As argparse: the command line or its inputs are wrong.


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


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with status 2."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(USAGE_STATUS)


def cli_main(main):
  """Wraps an absl `main(argv)` so that a UserError (or a usage error) exits with its
  message as one line, status 2."""
  if getattr(main, "_one_line_errors", False):
    return main
  from absl import app  # pylint: disable=g-import-not-at-top

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as error:
      fail(error)

  wrapped._one_line_errors = True  # pylint: disable=protected-access
  return wrapped


def run(main, argv: list[str] | None = None) -> None:
  """`absl.app.run(cli_main(main), argv)`, with command-line errors also in one line."""
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(cli_main(main), argv=argv, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, ending any error in one line (see `command_line_error`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    remaining = flags.FLAGS(argv)
    for name in flags.FLAGS:
      value = flags.FLAGS[name].value
      # ml_collections defers a config file's load error until the config is used.
      if type(value).__name__ == "_ErrorConfig":
        value.keys()
  except Exception as error:  # pylint: disable=broad-except
    fail(command_line_error(error, argv))
  return remaining


_DID_YOU_MEAN = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"')
_QUOTED_KEY = re.compile(r"^\W*'?([^'\\]+)")


def command_line_error(error: BaseException, argv: list[str]) -> str:
  """One readable line for an error raised while parsing the command line."""
  text = str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()] or [repr(error)]
  if isinstance(error, (AttributeError, KeyError)) and any(
      a.startswith("--config.") for a in argv):
    return _unknown_key_line(text, argv)
  if isinstance(error, OSError) and "config file" in text:
    detail = next((line for line in reversed(lines) if "Errno" in line), lines[-1])
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
    return f"--config={path}: cannot load the config file: {detail}"
  flag = lines[0].split(": ")[0][len("flag "):] if lines[0].startswith("flag --") else ""
  user_error = _innermost_user_error(error)
  if user_error is not None:  # E.g. a config file rejecting its argument string.
    return f"{flag}: {user_error}" if flag else str(user_error)
  if "Traceback (most recent call last):" in text:
    # A config file raised; its own exception is the last line of the trace.
    return f"{flag or lines[0]}: {lines[-1]}"
  if type(error).__module__.startswith("absl"):
    return " ".join(lines)[len("flag "):] if flag else " ".join(lines)
  # Anything else escaped from a config file: name the line that raised it.
  where = traceback.extract_tb(error.__traceback__)[-1]
  return (f"{type(error).__name__}: {' '.join(lines)} (at {where.filename}, "
          f"line {where.lineno})")


def _unknown_key_line(text: str, argv: list[str]) -> str:
  """ml_collections' error for a `--config.` override of a key the config lacks."""
  match = _DID_YOU_MEAN.search(text.replace("\\n", "\n"))
  key_match = _QUOTED_KEY.match(text)
  key = match.group(2) if match else (key_match.group(1) if key_match else text)
  hint = f'; did you mean "{match.group(1)}"?' if match else "."
  flag = next((a for a in argv if a.startswith("--config.")
               and re.search(rf"\.{re.escape(key)}([.=]|$)", a)), "--config.")
  return f"{flag}: the config has no key {key!r}{hint}"


def _innermost_user_error(error: BaseException | None) -> UserError | None:
  """The first UserError in the chain of causes and contexts, if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, UserError) and "Traceback" not in str(error):
      return error
    error = error.__cause__ or error.__context__
  return None
