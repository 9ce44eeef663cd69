r"""The one command-line convention of every tool: flags, --help, one-line errors.

Every tool (mobilenet_jax/{main,evaluate,predict,export,costs,benchmark}.py,
interop/from_keras.py, data/benchmark.py, experiments/{launch,compare,sweeps}.py and
benchmarks/*.py) is written the same way:

  def define_flags():      # absl flags, defined when the tool runs, never on import,
    cli.define_workdir(..) # so that any tools can be imported together
    flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")

  def main(argv):          # reads flags.FLAGS; raises UserError or app.UsageError
    ...

  def console_main():      # the `mobilenet-<tool>` console script
    cli.run(main, define_flags)

  if __name__ == "__main__":
    console_main()

and `run` gives them all the same behaviour:

- `--help` prints the tool's docstring and its own flags, also as a console script
  (whose `__main__` is pip's wrapper), and exits with status 0; `--helpfull` adds
  absl's and the libraries' flags.
- A `UserError`, a usage error or a bad command line (an unknown flag, a bad flag
  value, a config file that is missing or rejects its arguments, an unknown
  `--config.` key) ends the program with one `error: ...` line on stderr and exit
  status 2, as argparse does; never a traceback.
- `--config=configs/NAME.py` is found from any directory (config_files.py).

Flags that several tools take are defined here, so that one name has one meaning:

  --config=FILE[:ARGS]  a config file and its argument string; --config.KEY=VALUE
                        overrides any value
  --workdir=DIR         a run directory
  --step=N, --[no]ema   which checkpoint (default: the latest) and which weights
  --data_dir=DIR        overrides config.data.data_dir
  --batch_size=N        a global batch size (never --batch)
  --json=PATH           also writes the result as JSON to PATH; "-" prints the JSON
                        instead of the table (never a bool)
  --root=DIR            a sweep's root: one run directory ROOT/<point> per point
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import traceback
from typing import Callable

from absl import app
from absl import flags
from ml_collections import config_flags

from mobilenet_jax import config_files
from mobilenet_jax.errors import UserError

USAGE_STATUS = UserError.exit_status  # 2, as argparse: the command line is wrong.
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")

# ------------------------------------------------------------------ shared flags


def define_config() -> None:
  """--config (required), with --config.KEY=VALUE overrides."""
  config_flags.DEFINE_config_file(
      "config", None, "Config file, optionally with :ARGS, e.g. "
      "configs/mobilenet_v1.py:width=0.5,res=160; --config.KEY=VALUE overrides any "
      "value.", lock_config=True)
  flags.mark_flag_as_required("config")  # DEFINE_config_file takes no `required`.


def define_workdir(help_text: str = "The run directory.") -> None:
  """--workdir (required): a run directory."""
  flags.DEFINE_string("workdir", None, help_text, required=True)


def define_checkpoint_choice(use: str) -> None:
  """--step and --ema: which checkpoint of --workdir, and which of its weights."""
  flags.DEFINE_integer("step", None, "Checkpointed step (default: the latest).")
  flags.DEFINE_bool("ema", False, f"{use} the moving average of the weights.")


def define_data_dir(purpose: str = "") -> None:
  """--data_dir: overrides config.data.data_dir."""
  flags.DEFINE_string("data_dir", None, f"Overrides config.data.data_dir{purpose}.")


def define_batch_size(default: int | None, help_text: str) -> None:
  """--batch_size: a global batch size."""
  flags.DEFINE_integer("batch_size", default, help_text)


def define_json() -> None:
  """--json=PATH: the result as JSON (see `print_result`)."""
  flags.DEFINE_string("json", None, "Also write the result as JSON to this file; "
                      "'-': print the JSON instead of the table.")


def define_root(help_text: str) -> None:
  """--root (required): a sweep's root directory."""
  flags.DEFINE_string("root", None, help_text, required=True)


def print_result(result: dict, table: str, json_path: str | None) -> None:
  """What --json asks for: the table, plus the JSON in a file, or the JSON alone."""
  if json_path == "-":
    json.dump(result, sys.stdout, indent=2)
    print()
    return
  print(table)
  if json_path:
    with open(json_path, "w") as f:
      json.dump(result, f, indent=2)

# ------------------------------------------------------------------ the runner


def run(main: Callable[[list[str]], None], define_flags: Callable[[], None],
        argv: list[str] | None = None) -> None:
  """Defines the tool's flags and runs `main(argv)` by the shared convention."""
  defined = {id(flags.FLAGS[name]) for name in flags.FLAGS}
  define_flags()
  own = [flags.FLAGS[name] for name in flags.FLAGS
         if id(flags.FLAGS[name]) not in defined]
  _document(sys.modules[main.__module__], own)
  argv = list(sys.argv if argv is None else argv)
  if any(flag.name == "config" for flag in own):
    argv = config_files.resolve_argv(argv)
  # JAX's TPU probe ("Unable to initialize backend 'tpu'") is noise on CPU and GPU.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  app.run(one_line_errors(main), argv=argv, flags_parser=parse_flags)


def _document(tool, own_flags) -> None:
  """Makes --help show the tool's docstring and its own flags.

  absl's --help prints `__main__`'s docstring and the key flags of the program
  (`sys.argv[0]`); for a console script `__main__` is pip's wrapper, which has
  neither, and flags defined here belong to this module.
  """
  program = sys.modules["__main__"]
  if program is not tool and not program.__doc__:
    program.__doc__ = tool.__doc__
  for flag in own_flags:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def fail(message: str, status: int = USAGE_STATUS) -> None:
  """Prints `error: message` as one line on stderr and exits with `status` (2)."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a Ctrl-C.


def one_line_errors(main):
  """Wraps an absl `main(argv)` so that a UserError (or a usage error) exits with its
  message as one line and the error's `exit_status` (2 for most), and a Ctrl-C outside
  the train loop (which saves first: train/preemption.py) with one line, status 130."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as error:
      fail(error, getattr(error, "exit_status", USAGE_STATUS))
    except KeyboardInterrupt:
      print("error: interrupted (Ctrl-C); the committed checkpoints are intact (run "
            "the same command to resume).", file=sys.stderr, flush=True)
      sys.exit(INTERRUPTED_STATUS)

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, ending any error in one line (see `command_line_error`)."""
  try:
    remaining = flags.FLAGS(argv)
    for name in flags.FLAGS:
      value = flags.FLAGS[name].value
      # ml_collections defers a config file's load error until the config is used.
      if type(value).__name__ == "_ErrorConfig":
        value.keys()
  except SystemExit as exit_request:
    # absl's help flags print the help and exit with 1; help asked for is no error.
    sys.exit(0 if _asks_for_help(argv) else exit_request.code)
  except Exception as error:  # pylint: disable=broad-except
    fail(command_line_error(error, argv))
  return remaining


def _asks_for_help(argv: list[str]) -> bool:
  words = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  return any(w.startswith("-") and w.lstrip("-").split("=")[0] in _HELP_FLAGS
             for w in words)

# ------------------------------------------------------------------ error lines

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
