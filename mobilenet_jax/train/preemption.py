"""Preemption: turn SIGTERM (and optionally SIGINT) into a flag the train loop polls.

Cluster schedulers send SIGTERM some seconds before killing a job. The handler only
sets a flag, since a signal can arrive in the middle of a jitted step or an Orbax write;
the trainer checks `guard.requested` at each step boundary, saves with `force=True`,
waits for the save and returns normally (exit status 0).

    with preemption.PreemptionGuard() as guard:
      for step in ...:
        ...
        if guard.requested:
          checkpointer.save(state, force=True); checkpointer.wait(); return

Multi-host runs must stop at the same step on every host (a save is collective), and
a signal may reach the hosts at different steps: poll `guard.should_stop()` there, which
is `requested` on one host and agreed across hosts otherwise.
"""

from __future__ import annotations

import signal
import threading
from typing import Sequence

import jax
import numpy as np


class PreemptionGuard:
  """Context manager: while active, the given signals set `requested`.

  The previous handlers come back on exit. Signal handlers can only be installed
  from the main thread; elsewhere the guard is inert (and says so in `active`).
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
    self._signals = tuple(signals)
    self._previous: dict[int, object] = {}
    self.requested = False
    self.signal_received: int | None = None
    self.active = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    # Only set flags: anything heavier is unsafe inside a signal handler.
    self.requested = True
    self.signal_received = signum

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is threading.main_thread():
      for signum in self._signals:
        self._previous[signum] = signal.signal(signum, self._handle)
      self.active = True
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    self.active = False

  def should_stop(self) -> bool:
    """Whether to save and stop now; agreed by all hosts of a multi-host run.

    On several hosts this is a collective (an all-gather of one flag): every host
    must call it at the same steps. JAX's own preemption notice
    (`multihost_utils.reached_preemption_sync_point`, with the coordination
    service's SIGTERM hook) is an alternative that needs no per-step collective.
    """
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    return bool(np.any(flags))
