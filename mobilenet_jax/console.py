"""A console a researcher reads: our lines, and other libraries' only when asked.

By default the command-line tools show mobilenet_jax's own log lines, every library's
warnings and errors, and the progress lines the trainer prints; the INFO chatter of
Orbax, clu, TensorFlow, TFDS and JAX (about 60 lines per run) and TensorFlow's C++
start-up messages are dropped. Passing absl's `--verbosity` (e.g. `--verbosity=0`)
shows everything again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Callable, TypeVar
import warnings

from absl import flags
from absl import logging as absl_logging

T = TypeVar("T")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Loggers whose WARNINGs are deprecation notices about their own internals, not about
# anything a user of this package can change.
_NOISY_WARNING_LOGGERS = ("tensorflow",)


# Warnings about what this package does on purpose: checkpoints between evaluations
# carry no metrics (the latest-N policy keeps them, the best-of policy ignores them);
# TFDS looks into the built-in dataset's folder while it is still being generated.
_EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide metrics",
                      "Variant folder ")


class _OwnInfoOnly(logging.Filter):
  """Passes WARNING and above from anyone, lower levels only from this package."""

  def filter(self, record: logging.LogRecord) -> bool:
    if os.path.abspath(record.pathname).startswith(_PACKAGE_DIR):
      return True
    if record.levelno < logging.WARNING:
      return False
    message = str(record.msg)
    return not any(message.startswith(text) for text in _EXPECTED_WARNINGS)


def verbosity_requested() -> bool:
  """Whether --verbosity (absl's flag) was given on the command line."""
  return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present


def configure(quiet: bool | None = None, load_tensorflow: bool = True) -> None:
  """Sets up the console for a command-line tool; call first in its `main`.

  `quiet` defaults to "no --verbosity given". Must run before TensorFlow is imported
  for its C++ log level to apply. With `load_tensorflow=False` the tool calls
  `load_tensorflow_quietly()` itself, later: a config error then costs no TensorFlow
  import (~7 s on a 2-core CPU).
  """
  if quiet is None:
    quiet = not verbosity_requested()
  if not quiet:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())
  for name in _NOISY_WARNING_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  if load_tensorflow:
    load_tensorflow_quietly()


def load_tensorflow_quietly() -> None:
  """Imports TensorFlow and TFDS with their start-up lines hidden."""
  with stderr_silenced():
    # TensorFlow's C++ start-up lines ("oneDNN custom operations are on", "This
    # TensorFlow binary is optimized ...") go straight to file descriptor 2 while
    # it loads, whatever TF_CPP_MIN_LOG_LEVEL says. _tf first hides the
    # accelerators from TensorFlow.
    from mobilenet_jax.data import _tf  # pylint: disable=g-import-not-at-top,unused-import
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # tqdm bars with escape codes, also in log files.


class CapturedStderr:
  """What `stderr_captured` caught; `replay(drop=...)` writes it back to stderr."""

  def __init__(self):
    self.text = ""

  def replay(self, drop: Callable[[str], bool] = lambda line: False) -> None:
    """Writes the captured lines to stderr, leaving out those where `drop` is true."""
    kept = [line for line in self.text.splitlines(keepends=True) if not drop(line)]
    sys.stderr.write("".join(kept))
    sys.stderr.flush()


@contextlib.contextmanager
def stderr_captured():
  """Holds back everything written to file descriptor 2 in the block (C++ included).

  For library noise that arrives from threads while a call runs: the caller decides
  afterwards what to `replay` of it. Nothing is lost if the block raises.
  """
  captured = CapturedStderr()
  with tempfile.TemporaryFile(mode="w+b") as buffer:
    try:
      with _stderr_pointed_at(buffer.fileno()):
        yield captured
    finally:
      buffer.seek(0)
      captured.text = buffer.read().decode("utf-8", "replace")


def stderr_only_on_failure(fn: Callable[[], T]) -> T:
  """`fn()`, with what it writes to stderr shown only if it raises."""
  captured = None
  try:
    with stderr_captured() as captured:
      return fn()
  except BaseException:
    if captured is not None:
      captured.replay()
    raise


@contextlib.contextmanager
def _stderr_pointed_at(fd: int):
  """Points file descriptor 2 at `fd` for the block (C++ writes included)."""
  sys.stderr.flush()
  saved = os.dup(2)
  os.dup2(fd, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


@contextlib.contextmanager
def stderr_silenced():
  """Points file descriptor 2 at /dev/null for the block."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    with _stderr_pointed_at(devnull):
      yield
  finally:
    os.close(devnull)

