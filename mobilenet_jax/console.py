"""A console a researcher reads: our lines, and other libraries' only when asked.

By default the command-line tools show mobilenet_jax's own log lines, every library's
warnings and errors, and the progress lines the trainer prints; the INFO chatter of
Orbax, clu, TensorFlow, TFDS and JAX (about 60 lines per run) and TensorFlow's C++
start-up messages are dropped. Passing absl's `--verbosity` (e.g. `--verbosity=0`)
shows everything again.
"""

from __future__ import annotations

import logging
import os
import warnings

from absl import flags
from absl import logging as absl_logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Loggers whose WARNINGs are deprecation notices about their own internals, not about
# anything a user of this package can change.
_NOISY_WARNING_LOGGERS = ("tensorflow",)


class _OwnInfoOnly(logging.Filter):
  """Passes WARNING and above from anyone, lower levels only from this package."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING
            or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR))


def verbosity_requested() -> bool:
  """Whether --verbosity (absl's flag) was given on the command line."""
  return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present


def configure(quiet: bool | None = None) -> None:
  """Sets up the console for a command-line tool; call first in its `main`.

  `quiet` defaults to "no --verbosity given". Must run before TensorFlow is imported
  for its C++ log level to apply.
  """
  if quiet is None:
    quiet = not verbosity_requested()
  if not quiet:
    return
  # TensorFlow's C++ INFO lines ("oneDNN custom operations are on", ...).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())
  for name in _NOISY_WARNING_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  # TensorFlow through _tf, which first hides the accelerators from it.
  from mobilenet_jax.data import _tf  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # tqdm bars with escape codes, also in log files.
