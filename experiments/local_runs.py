"""Local sweep runs: the points train here, one after another or N at once.

Each point's output goes to <workdir>/train.log. SIGTERM or Ctrl-C (`CHILDREN.terminate`)
stops the running points the way a preemption does: each saves a checkpoint. A failed
point does not stop the others. A second launcher on the same root is safe: a point
that got results since the launch started is skipped, and one another live trainer
holds (its run lock, which the launcher takes before it starts a trainer and hands to
it) is left to it, reported as busy, not FAILED; the launch waits for it at the end
and counts it finished if it then has results.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time

from . import point_state
import mobilenet_jax
from mobilenet_jax import errors
from mobilenet_jax.rundir import layout
from mobilenet_jax.rundir import lock as run_lock
from mobilenet_jax.rundir import results as run_results

# The folder that holds the package: the clone, or site-packages for an installed copy
# (whose experiments/ is mobilenet_jax/experiments).
REPO = pathlib.Path(mobilenet_jax.__file__).resolve().parent.parent


class _Children:
  """The running training processes, so that a SIGTERM reaches all of them."""

  def __init__(self):
    self._procs: set[subprocess.Popen] = set()
    self._lock = threading.Lock()
    self.stopping = False

  def add(self, proc):
    with self._lock:
      self._procs.add(proc)

  def remove(self, proc):
    with self._lock:
      self._procs.discard(proc)

  def terminate(self):
    """Preempts every running point: each saves a checkpoint and exits."""
    self.stopping = True
    with self._lock:
      for proc in self._procs:
        proc.send_signal(signal.SIGTERM)


CHILDREN = _Children()

DONE, BUSY, FAILED = "done", "busy", "failed"  # How one point's turn ended.


def _run_one(job, python: str, out) -> str:
  """Trains one job here: "done" (it has results), "busy" (another trainer holds its
  workdir) or "failed" (failed, or stopped without results)."""
  # Taken here, before the trainer's ~20 s of start-up, and handed to it: no second
  # launcher can start this point meanwhile, nor finish it between the check and the
  # start.
  start = time.time()
  try:
    with run_lock.held_for_child(job.workdir) as (lock_env, lock_fds):
      if _finished_meanwhile(job, out):
        return DONE
      returncode = _train(job, python, lock_env, lock_fds, out)
  except run_lock.RunLockedError as e:
    print(f"busy {job.name}: another run has it ({e.holder}); left to it",
          file=out, flush=True)
    return BUSY
  except errors.UserError as e:  # An unwritable workdir.
    print(f"FAILED {job.name}: {e}", file=out, flush=True)
    return FAILED
  seconds = time.time() - start
  log = layout.log_path(job.workdir)
  if returncode != 0:
    tail = "".join(log.read_text().splitlines(True)[-5:])
    print(f"FAILED {job.name} ({_how_it_ended(returncode)}, {seconds:.0f} s); last "
          f"lines of {log}:\n{tail}", file=out, flush=True)
    return FAILED
  return DONE if _report_results(job, seconds, out) else FAILED


def _how_it_ended(returncode: int) -> str:
  """"exit status 1", or "killed by SIGKILL" for a child a signal ended."""
  if returncode >= 0:
    return f"exit status {returncode}"
  try:
    return f"killed by {signal.Signals(-returncode).name}"
  except ValueError:  # A real-time signal has no name.
    return f"killed by signal {-returncode}"


def _train(job, python: str, lock_env: dict, lock_fds: tuple, out) -> int:
  """Runs the trainer for `job`, handing it the run lock (`lock_env`, `lock_fds`);
  its exit status."""
  log = layout.log_path(job.workdir)
  log.parent.mkdir(parents=True, exist_ok=True)
  command = [python, *job.train_args()]
  print(f"start {job.name}: {shlex.join(command)}\n      log: {log}", file=out, flush=True)
  env = dict(os.environ, **lock_env, PYTHONPATH=os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
  with log.open("a") as f:
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT, pass_fds=lock_fds)
    CHILDREN.add(proc)
    returncode = proc.wait()
    CHILDREN.remove(proc)
  return returncode


def _finished_meanwhile(job, out) -> bool:
  """Whether `job` got results after the launch listed it (another launcher's work);
  says so on `out` unless it is None."""
  try:
    finished = point_state.is_finished(job)
  except errors.UserError:
    return False  # The run below meets the mismatch and reports it.
  if finished and out is not None:
    print(f"skip {job.name}: it has results now (trained beside this launcher)",
          file=out, flush=True)
  return finished


def _report_results(job, seconds: float, out) -> bool:
  """Prints how a point that exited cleanly ended; whether it has results."""
  try:
    finished = point_state.is_finished(job)
  except errors.UserError as e:
    print(f"FAILED {job.name}: {e}", file=out, flush=True)
    return False
  if not finished:
    print(f"stopped {job.name} after {seconds:.0f} s without results (preempted?); "
          "run the sweep again to resume it", file=out, flush=True)
    return False
  results = run_results.read_results(job.workdir)
  top1, source = results.top1
  print(f"done {job.name} in {seconds:.0f} s: top-1 {100 * top1:.1f}% ({source})",
        file=out, flush=True)
  return True


def run_local(jobs, *, python: str = sys.executable, parallel: int = 1,
              out=None) -> list[str]:
  """Trains `jobs` here, `parallel` at a time; the names of those that did not finish.

  A point left to another trainer counts as finished if it has results by the end.
  """
  out = out or sys.stdout
  outcomes = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = {pool.submit(_run_if_not_stopping, job, python, out): job for job in jobs}
    for future in concurrent.futures.as_completed(futures):
      outcomes[futures[future].name] = future.result()
  busy = [job for job in jobs if outcomes[job.name] == BUSY]
  _wait_for_other_trainers(busy, out)
  unfinished = []
  for job in jobs:
    if outcomes[job.name] == BUSY and _finished_meanwhile(job, out=None):
      print(f"done {job.name} by the other trainer", file=out, flush=True)
    elif outcomes[job.name] != DONE:
      unfinished.append(job.name)
  return unfinished


WAIT_POLL_S = 5.0  # How often a launch checks on points another trainer is running.


def _wait_for_other_trainers(jobs, out) -> None:
  """Waits while another live trainer holds any of `jobs`' workdirs, so that this
  launch ends with what they finished rather than a premature "did not finish"."""
  waiting = [job for job in jobs if run_lock.live_holder(job.workdir)]
  if waiting and not CHILDREN.stopping:
    print(f"waiting for {len(waiting)} point(s) another trainer is running: "
          f"{', '.join(job.name for job in waiting)} (Ctrl-C leaves them to it)",
          file=out, flush=True)
  while waiting and not CHILDREN.stopping:
    time.sleep(WAIT_POLL_S)
    waiting = [job for job in waiting if run_lock.live_holder(job.workdir)]


def _run_if_not_stopping(job, python: str, out) -> str:
  if CHILDREN.stopping:
    return FAILED
  return _run_one(job, python, out)
