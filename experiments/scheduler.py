"""Keeps every TPU slice busy with the next unfinished point of a sweep.

One thread per slice: acquire the slice (request it and wait, when the launcher creates
it), prepare it (code and environment), then take points from a shared queue, one at a
time, until none is left. While a point trains, the slice's state is polled; a slice
that is preempted or deleted under a point puts the point back at the front of the
queue, so that the next free slice resumes it from its last checkpoint (its workdir is
the same; the lost trainer's run lock, which it could not release, is cleared), and,
when the launcher created the slice, requests it again. A dropped connection to a slice
that is still up reconnects to the running point. Every event of a point is one status
line. `stop()` (SIGTERM, Ctrl-C) sends the running points SIGTERM, so that each saves a
checkpoint, and lets every slice go.

The slices themselves are behind a backend (experiments/tpu_backend.py runs gcloud);
this module only decides what runs where.
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
import sys
import threading
import time
from typing import Protocol

from . import point_state
from mobilenet_jax import errors
from mobilenet_jax.rundir import lock as run_lock
from mobilenet_jax.rundir import results as run_results

CONNECTION_LOST = 255  # ssh's exit status when the connection fails or drops.
MAX_RETRIES = 3  # Reconnections or resumptions of one point on a slice that stays up.


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A prepared slice: ok, or why not; the points still running on it (their keys)."""
  ok: bool
  message: str = ""
  running: frozenset[str] = frozenset()


class Backend(Protocol):
  """What the scheduler needs from the slices."""
  recreates: bool  # Whether a lost slice is requested again (the launcher created it).
  chips: int | None  # Chips per slice, when known (for chip-hours).

  def acquire(self, tpu_slice) -> bool: ...
  def prepare(self, tpu_slice) -> Prepared: ...
  def start_point(self, tpu_slice, job): ...  # A process: wait(timeout), kill().
  def output_tail(self, process) -> str: ...
  def alive(self, tpu_slice) -> bool: ...
  def stop_point(self, tpu_slice, job) -> None: ...
  def release(self, tpu_slice) -> None: ...
  def point_key(self, job) -> str: ...


class StatusLines:
  """Prints status lines from several threads, whole and timestamped."""

  def __init__(self, out=None):
    self._out, self._lock = out or sys.stdout, threading.Lock()

  def say(self, text: str) -> None:
    with self._lock:
      print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self._out, flush=True)


class Scheduler:
  """Runs `jobs` (launch.Job) on `slices` through `backend`."""

  def __init__(self, jobs, slices, backend: Backend, *, poll_s: float = 60.0,
               status: StatusLines | None = None, is_finished=point_state.is_finished,
               stopping: threading.Event | None = None):
    self._queue = collections.deque(jobs)
    self._order = [j.name for j in jobs]
    self._slices, self._backend, self._poll_s = list(slices), backend, poll_s
    self.say = (status or StatusLines()).say
    self._is_finished = is_finished
    self._cond = threading.Condition()
    self._running: dict[str, object] = {}  # Slice name -> job.
    self._in_flight = 0
    self._failed: list[str] = []
    self._elapsed = collections.Counter()  # Point name -> seconds on slices.
    self.stopping = stopping or threading.Event()  # Shared with the backend's waits.

  # ------------------------------------------------------------ the queue

  def _take(self, tpu_slice, running_keys: frozenset[str]):
    """The next point for `tpu_slice` (one still running there first), or None."""
    with self._cond:
      while not self.stopping.is_set():
        mine = [j for j in self._queue if self._backend.point_key(j) in running_keys]
        if mine or self._queue:
          job = mine[0] if mine else self._queue[0]
          self._queue.remove(job)
          self._running[tpu_slice.name] = job
          self._in_flight += 1
          return job
        # A slice the launcher does not re-create waits for points that may come back.
        if self._in_flight == 0 or self._backend.recreates:
          return None
        self._cond.wait(timeout=self._poll_s)
      return None

  def _settle(self, tpu_slice, job, *, requeue: bool = False, failed: bool = False):
    with self._cond:
      self._running.pop(tpu_slice.name, None)
      self._in_flight -= 1
      if requeue:
        self._queue.appendleft(job)
      if failed:
        self._failed.append(job.name)
      self._cond.notify_all()

  # ------------------------------------------------------------ one slice

  def _serve(self, tpu_slice) -> None:
    try:
      self._serve_slice(tpu_slice)
    except errors.UserError as e:  # A gcloud command failed: this slice is out.
      self.say(f"slice {tpu_slice.name}: {e}; it takes no more points")
    finally:
      self._backend.release(tpu_slice)

  def _serve_slice(self, tpu_slice) -> None:
    while not self.stopping.is_set():
      if not self._backend.acquire(tpu_slice):
        return
      prepared = self._backend.prepare(tpu_slice)
      if not prepared.ok:
        self.say(f"slice {tpu_slice.name}: {prepared.message}; it takes no points")
        return
      if not self._serve_points(tpu_slice, prepared.running):
        return  # Nothing left for it.
      if not self._backend.recreates:
        self.say(f"slice {tpu_slice.name} is gone; it takes no more points (the "
                 "launcher did not create it, so it does not request it again)")
        return

  def _serve_points(self, tpu_slice, running: frozenset[str]) -> bool:
    """Runs points on the slice until none is left (False) or it is lost (True)."""
    while True:
      job = self._take(tpu_slice, running)
      if job is None:
        return False
      lost = self._run_point(tpu_slice, job, self._backend.point_key(job) in running)
      running = frozenset()
      if lost:
        return True

  def _run_point(self, tpu_slice, job, reattach: bool) -> bool:
    """Trains `job` on the slice until it finishes, fails or the slice is lost."""
    retries = 0
    while True:
      verb = "reattached to the run on" if reattach else "started on"
      self.say(f"{job.name}: {verb} {tpu_slice.name}")
      start = time.time()
      process = self._backend.start_point(tpu_slice, job)
      status, alive = self._watch(tpu_slice, process)
      self._elapsed[job.name] += time.time() - start
      if status == 0 and self._finished(job):
        self.say(self._done_line(tpu_slice, job))
        self._settle(tpu_slice, job)
        return False
      if self.stopping.is_set():
        self._settle(tpu_slice, job, failed=True)
        return False
      if not alive:
        self.say(f"{job.name}: slice {tpu_slice.name} was preempted or deleted while it "
                 "trained; re-queued: it resumes from its last checkpoint"
                 f"{self._clear_lost_lock(job)}")
        self._settle(tpu_slice, job, requeue=True)
        return True
      if (status in (0, CONNECTION_LOST)) and retries < MAX_RETRIES:
        # A dropped connection leaves the run going: the next ssh waits for it.
        retries, reattach = retries + 1, status == CONNECTION_LOST
        why = "the connection dropped" if status else "it stopped without results"
        self.say(f"{job.name}: {why} on {tpu_slice.name}; resuming it there "
                 f"(retry {retries} of {MAX_RETRIES})")
        continue
      if status == run_lock.RunLockedError.exit_status:
        # Another trainer holds the point (a second launcher's, or a lost slice's whose
        # lock could not be cleared): not a failure of the point, and not retried here.
        # Worded as the local launcher words it (local_runs.py).
        self.say(f"{job.name}: busy: another run has it "
                 f"({self._backend.output_tail(process)}); left to it. A later launch "
                 "trains it if that run stops, or once its lock lapses "
                 f"({run_lock.LEASE_S // 60} min after its last renewal)")
        self._settle(tpu_slice, job, failed=True)
        return False
      self.say(f"{job.name}: FAILED on {tpu_slice.name} (exit status {status}): "
               f"{self._backend.output_tail(process)}; its log: "
               f"{job.workdir}/train.<worker>.log")
      self._settle(tpu_slice, job, failed=True)
      return False

  @staticmethod
  def _clear_lost_lock(job) -> str:
    """Clears the run lock the lost slice's trainer could not release; what to add to
    the re-queue line."""
    try:
      holder = run_lock.clear_lost_holder(job.workdir)
    except Exception as error:  # pylint: disable=broad-except
      # gs:// raises its own error types; the lock then lapses on its own.
      return (f" (its run lock could not be cleared: {error}; it lapses "
              f"{run_lock.LEASE_S // 60} min after its last renewal, and a trainer "
              "started before then is refused)")
    return f" (its run lock, held by the lost {holder}, cleared)" if holder else ""

  def _watch(self, tpu_slice, process) -> tuple[int | None, bool]:
    """Waits for the point's process, polling the slice; (exit status, slice alive)."""
    while True:
      try:
        status = process.wait(timeout=self._poll_s)
      except subprocess.TimeoutExpired:
        if self.stopping.is_set() or self._backend.alive(tpu_slice):
          continue
        process.kill()
        process.wait()
        return None, False
      if status != 0 and not self.stopping.is_set():
        return status, self._backend.alive(tpu_slice)
      return status, True

  def _finished(self, job) -> bool:
    try:
      return self._is_finished(job)
    except errors.UserError as e:
      self.say(f"{job.name}: {e}")
      return False

  def _done_line(self, tpu_slice, job) -> str:
    seconds = self._elapsed[job.name]
    took = f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
    chips = self._backend.chips
    cost = f", {seconds / 3600 * chips:.2f} chip-hours ({chips} chips)" if chips else ""
    try:
      top1, source = run_results.read_results(job.workdir).top1
      result = f": top-1 {100 * top1:.1f}% ({source})"
    except run_results.ResultsError:
      result = ""
    return f"{job.name}: done on {tpu_slice.name} after {took} on slices{cost}{result}"

  # ------------------------------------------------------------ all slices

  def run(self) -> list[str]:
    """Runs every point; the names of those that did not finish, in sweep order."""
    threads = [threading.Thread(target=self._serve, args=(s,), daemon=True)
               for s in self._slices]
    for thread in threads:
      thread.start()
    for thread in threads:
      while thread.is_alive():
        try:
          thread.join(timeout=0.5)  # Short joins: signals reach the main thread.
        except KeyboardInterrupt:
          self.stop()
    unfinished = set(self._failed) | {j.name for j in self._queue}
    return sorted(unfinished, key=self._order.index)

  def stop(self) -> None:
    """Stops the running points (each saves a checkpoint); slices are let go."""
    if self.stopping.is_set():
      return
    self.stopping.set()
    with self._cond:
      running = list(self._running.items())
      self._cond.notify_all()
    self.say(f"stopping: {len(running)} running point(s) save a checkpoint and exit")
    by_name = {s.name: s for s in self._slices}
    threads = [threading.Thread(target=self._backend.stop_point, args=(by_name[n], j))
               for n, j in running]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
