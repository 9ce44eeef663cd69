"""Preemption: turn SIGTERM and Ctrl-C (SIGINT) into a flag the train loop polls.

A second Ctrl-C stops the process at once (exit status 130), touching nothing: a save
in flight is left as Orbax's temporary directory, which never counts as a checkpoint.

Cluster schedulers send SIGTERM some seconds before killing a job. The handler only
sets a flag, since a signal can arrive in the middle of a jitted step or an Orbax write;
the trainer asks `guard.should_stop(step)` at each step boundary, saves with
`force=True`, waits for the save and returns normally (exit status 0).

    with preemption.PreemptionGuard() as guard:
      for step in ...:
        ...
        if guard.should_stop(step):
          checkpointer.save(state, force=True); checkpointer.wait(); return

Multi-host runs must stop at the same step on every host (a save is collective), and
a signal may reach the hosts at different steps. There, JAX's preemption service
(started by `jax.distributed.initialize`) owns SIGTERM: it spreads the notice to every
host in the background and `multihost_utils.reached_preemption_sync_point(step)` turns
true on all of them at the same step, with no collective in the step loop (a per-step
host sync would stall asynchronous dispatch on a TPU pod). Where that service is off
(`jax_enable_preemption_service=False`), the hosts agree by an all-gather of the flag
every `sync_every_steps` steps instead.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Sequence

import jax
import numpy as np

# Fallback only: one all-gather per this many steps, a fraction of a second of
# training apart on a pod, well inside a scheduler's SIGTERM grace period.
SYNC_EVERY_STEPS = 20
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a Ctrl-C (as cli.py does).


def _jax_preemption_service():
  """JAX's preemption sync manager of this multi-process run, or None.

  Read from jax._src (no public accessor): if a JAX release moves it, the guard falls
  back to the all-gather every `sync_every_steps`.
  """
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  state = getattr(distributed, "global_state", None)
  return getattr(state, "preemption_sync_manager", None)


class PreemptionGuard:
  """Context manager: while active, the given signals set `requested`.

  The previous handlers come back on exit. Signal handlers can only be installed
  from the main thread; elsewhere the guard is inert (and says so in `active`). On a
  multi-process run with JAX's preemption service, SIGTERM stays with that service.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,),
               sync_every_steps: int = SYNC_EVERY_STEPS):
    self._signals = tuple(signals)
    self._previous: dict[int, object] = {}
    self._sync_every = sync_every_steps
    self._use_jax_service = False
    self.requested = False
    self.signal_received: int | None = None
    self.active = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT and self.signal_received == signal.SIGINT:
      os.write(2, b"error: interrupted twice: stopped at once; the checkpoints already "
                  b"committed are intact (run the same command to resume).\n")
      os._exit(INTERRUPTED_STATUS)  # pylint: disable=protected-access
    # Only set flags: anything heavier is unsafe inside a signal handler.
    self.requested = True
    self.signal_received = signum
    if signum == signal.SIGINT:
      os.write(2, b"Ctrl-C: saving a checkpoint at the next step boundary, then "
                  b"stopping (Ctrl-C again stops at once).\n")

  def __enter__(self) -> "PreemptionGuard":
    multi_host = jax.process_count() > 1
    self._use_jax_service = multi_host and _jax_preemption_service() is not None
    on_main_thread = threading.current_thread() is threading.main_thread()
    if multi_host and not self._use_jax_service and on_main_thread:
      # Connect the hosts' collectives now: a signal landing during Gloo's first
      # handshake (inside the first all-gather) can hang it (seen under CPU load).
      self._agree()
    if on_main_thread:
      for signum in self._signals:
        if self._use_jax_service and signum == signal.SIGTERM:
          continue  # Replacing its handler would deafen JAX's service.
        self._previous[signum] = signal.signal(signum, self._handle)
      self.active = True
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    self.active = False

  def should_stop(self, step: int | None = None) -> bool:
    """Whether to save and stop after `step`; the same answer on every host.

    On several hosts, call it at every step on every host with the same step numbers
    (one process may leave `step` out).
    """
    if jax.process_count() == 1:
      return self.requested
    if step is None:
      raise ValueError("should_stop(step) needs the step number on multi-host runs.")
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if self._use_jax_service and multihost_utils.reached_preemption_sync_point(step):
      self.requested, self.signal_received = True, signal.SIGTERM
      return True
    if not self._previous:  # No handler of ours here: nothing local to agree on.
      return False
    return step % self._sync_every == 0 and self._agree()

  def _agree(self) -> bool:
    """An all-gather of the local flag: true on every host if true on one."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    self.requested = bool(np.any(flags))
    return self.requested
