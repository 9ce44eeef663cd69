"""Orbax's noise, kept off a researcher's console (and nothing else hidden).

Three kinds: the "Given directory is read only" warning when we open read-only on
purpose; the interleaved tracebacks TensorStore's threads print when the reads Orbax
abandoned after one failed array find their event loop closed; and the "exception was
never retrieved" / unraisable-coroutine reports of those abandoned reads, which would
otherwise arrive after our one-line error (at the latest at exit).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time

from mobilenet_jax import console

# Fragments of the tracebacks that TensorStore's threads print, interleaved, when the
# reads Orbax abandoned after one failed array finish and find its event loop closed.
_ABANDONED_READ_NOISE = ("Event loop is closed", "Traceback (most recent call last)",
                         "base_events.py", "_check_closed()")
_ABANDONED_READ_DRAIN_S = 0.5  # Local reads still in flight finish well within this.


class _ReadOnlyByChoice(logging.Filter):
  """Drops Orbax's "Given directory is read only" warning: we asked for read-only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def read_only_warning_dropped(active: bool = True):
  """Drops that warning inside the block (Orbax logs through absl's logger)."""
  quiet, absl_logger = _ReadOnlyByChoice(), logging.getLogger("absl")
  if active:
    absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


def _is_abandoned_read_noise(line: str) -> bool:
  """A line of those tracebacks, or a fragment left between their interleaved lines."""
  return (any(fragment in line for fragment in _ABANDONED_READ_NOISE)
          or line.strip() in ("", ":", "RuntimeError", "RuntimeError:"))


def reason(error: BaseException) -> str:
  """The innermost cause's first line: usually names the file or array that failed."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().splitlines()
  line = text[0] if text else ""
  return f"{type(error).__name__}: {line[:400]}"


def call_quietly_on_failure(fn):
  """(fn(), None), or (None, why it failed in one line): what `fn` printed to stderr
  is replayed, less the abandoned-read noise when it failed.

  Only the reason is kept, not the exception: its frames hold the abandoned reads,
  which must be released before they are collected.
  """
  why = None
  with console.stderr_captured() as captured:
    try:
      result = fn()
    except Exception as error:  # pylint: disable=broad-except
      why, result = reason(error), None
      time.sleep(_ABANDONED_READ_DRAIN_S)
  if why is None:
    captured.replay()
    return result, None
  captured.replay(drop=_is_abandoned_read_noise)
  collect_abandoned_reads()
  return None, why


def collect_abandoned_reads() -> None:
  """Quiets the reads (and writes) Orbax abandons when one array of a restore (or
  save) fails; the caller reports the failure in one line.

  From the first failed restore on, unraisable errors from Orbax coroutines go to the
  debug log; any other still prints.
  """
  if getattr(sys.unraisablehook, "_quiets_orbax", False):
    gc.collect()
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if "orbax" in getattr(getattr(unraisable.object, "cr_code", None), "co_filename", ""):
      logging.debug("Abandoned checkpoint read: %s", unraisable.exc_value)
    else:
      previous(unraisable)

  hook._quiets_orbax = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_AbandonedOrbaxFutures())
  logging.getLogger("absl").addFilter(_FailedOrbaxThreads())
  gc.collect()


class _AbandonedOrbaxFutures(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" records of Orbax reads."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage().lower()
    return not ("exception was never retrieved" in message
                and ("orbax" in message or "ocdbt" in message))


class _FailedOrbaxThreads(logging.Filter):
  """Drops Orbax's per-thread "raised an exception" records of a failed save: the
  same error reaches the caller, who reports it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR
                and "_SignalingThread.run() raised an exception" in record.getMessage())
