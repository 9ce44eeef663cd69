"""The TPU launcher's scheduler with an in-memory backend: every slice busy, a preempted
point re-queued and resumed, a stop that saves and lets every slice go. (The gcloud
backend is tested against a fake gcloud in tests/test_tpu_launch.py and
tests/test_sweep_end_to_end.py.)"""

import dataclasses
import io
import json
import subprocess
import threading
import time

from experiments import scheduler
from mobilenet_jax.rundir import layout
from mobilenet_jax.rundir import lock as run_lock


@dataclasses.dataclass(frozen=True)
class _Job:
  name: str
  workdir: str = ""


@dataclasses.dataclass(frozen=True)
class _Slice:
  name: str


class _Process:
  """A point's ssh command: ends when the backend says so."""

  def __init__(self):
    self.status = None
    self.done = threading.Event()

  def end(self, status):
    self.status = status
    self.done.set()

  def wait(self, timeout=None):
    if not self.done.wait(timeout):
      raise subprocess.TimeoutExpired("ssh", timeout)
    return self.status

  def kill(self):
    self.end(-9)


class _Backend:
  """Points take `seconds`; `preempt` names points whose first run loses its slice;
  `fail` points exit 1; `locked` points find their run lock held; `hang` points run
  until stopped."""

  def __init__(self, *, recreates=True, seconds=0.05, preempt=(), fail=(), hang=(),
               running=None, locked=()):
    self.recreates, self.chips = recreates, 8
    self._seconds, self._preempt, self._fail, self._hang = seconds, set(preempt), fail, hang
    self._locked = locked
    self._running = running or {}
    self.finished, self.lost = set(), set()
    self.events, self.lock = [], threading.Lock()
    self.busy, self.max_busy = 0, 0
    self.processes = {}

  def _log(self, *event):
    with self.lock:
      self.events.append(event)

  def point_key(self, job):
    return job.name

  def acquire(self, s):
    self._log("acquire", s.name)
    self.lost.discard(s.name)
    return True

  def prepare(self, s):
    self._log("prepare", s.name)
    return scheduler.Prepared(True, running=frozenset(self._running.get(s.name, ())))

  def start_point(self, s, job):
    self._log("start", s.name, job.name)
    process = _Process()
    self.processes[job.name] = (s, process)
    with self.lock:
      self.busy += 1
      self.max_busy = max(self.max_busy, self.busy)

    def finish():
      time.sleep(self._seconds)
      with self.lock:
        self.busy -= 1
      if job.name in self._hang:
        return
      if job.name in self._preempt:
        self._preempt.discard(job.name)
        self.lost.add(s.name)
        process.end(scheduler.CONNECTION_LOST)
      elif job.name in self._fail:
        process.end(1)
      elif job.name in self._locked:  # The trainer found its run lock held.
        process.end(run_lock.RunLockedError.exit_status)
      else:
        self.finished.add(job.name)
        process.end(0)

    threading.Thread(target=finish, daemon=True).start()
    return process

  def output_tail(self, process):
    return f"exit {process.status}"

  def alive(self, s):
    return s.name not in self.lost

  def stop_point(self, s, job):
    self._log("stop", s.name, job.name)
    self.processes[job.name][1].end(0)  # Saved a checkpoint; no results.

  def release(self, s):
    self._log("release", s.name)


def _run(jobs, slices, backend):
  out = io.StringIO()
  sched = scheduler.Scheduler(jobs, slices, backend, poll_s=0.02,
                              status=scheduler.StatusLines(out),
                              is_finished=lambda job: job.name in backend.finished)
  return sched, sched.run(), out.getvalue()


def _starts(backend):
  return [e[1:] for e in backend.events if e[0] == "start"]


def test_every_slice_takes_the_next_point():
  jobs = [_Job(f"p{i}") for i in range(6)]
  backend = _Backend(running={"b": {"p4"}})
  _, failed, out = _run(jobs, [_Slice("a"), _Slice("b")], backend)
  assert failed == [] and backend.finished == {j.name for j in jobs}
  starts = _starts(backend)
  assert sorted(p for _, p in starts) == [j.name for j in jobs]  # Each point once.
  assert {s for s, _ in starts} == {"a", "b"} and backend.max_busy == 2
  assert ("b", "p4") == [s for s in starts if s[0] == "b"][0]  # Still running there.
  assert "p4: reattached to the run on b" in out
  assert out.count(": done on ") == 6 and "chip-hours (8 chips)" in out
  assert sorted(e[1] for e in backend.events if e[0] == "release") == ["a", "b"]


def test_a_preempted_point_is_requeued_and_its_slice_requested_again():
  jobs = [_Job(f"p{i}") for i in range(3)]
  backend = _Backend(preempt={"p1"})
  _, failed, out = _run(jobs, [_Slice("a"), _Slice("b")], backend)
  assert failed == [] and backend.finished == {"p0", "p1", "p2"}
  assert [p for _, p in _starts(backend)].count("p1") == 2
  assert "p1: slice" in out and "was preempted or deleted while it trained; re-queued" \
      in out
  lost_slice = next(s for s, p in _starts(backend) if p == "p1")
  acquires = [e for e in backend.events if e == ("acquire", lost_slice)]
  assert len(acquires) == 2  # Requested again after the preemption.


def test_a_point_lost_with_its_slice_gets_its_run_lock_back(tmp_path, monkeypatch):
  # On gs:// the lock is a file a preempted trainer never got to delete; the launcher
  # knows that trainer is gone, so the re-queued point need not wait out its lease.
  monkeypatch.setattr(run_lock, "_on_object_storage", lambda workdir: True)
  backend, lock_at_start = _Backend(preempt={"p0"}), []
  start_point = backend.start_point

  def trainer_takes_the_lock(s, job):
    path = layout.lock_path(job.workdir)
    lock_at_start.append(path.exists())
    path.write_text(json.dumps({"host": f"{s.name}-w-0", "pid": 42, "role": "trainer",
                                "started": "2026-12-06T20:00:00+00:00"}))
    return start_point(s, job)

  backend.start_point = trainer_takes_the_lock
  _, failed, out = _run([_Job("p0", str(tmp_path))], [_Slice("a")], backend)
  assert failed == [] and backend.finished == {"p0"}
  assert lock_at_start == [False, False]
  assert ("re-queued: it resumes from its last checkpoint (its run lock, held by the "
          "lost trainer PID 42 on a-w-0, started 2026-12-06T20:00:00+00:00, cleared)") \
      in out


def test_a_lock_that_cannot_be_cleared_is_said_and_the_sweep_goes_on(monkeypatch):
  def storage_error(workdir):
    raise RuntimeError("403 Forbidden")  # gs:// errors are not OSErrors.

  monkeypatch.setattr(run_lock, "clear_lost_holder", storage_error)
  backend = _Backend(preempt={"p0"})
  _, failed, out = _run([_Job("p0"), _Job("p1")], [_Slice("a")], backend)
  assert failed == [] and backend.finished == {"p0", "p1"}
  assert "(its run lock could not be cleared: 403 Forbidden; it lapses 10 min" in out


def test_a_slice_not_created_here_is_not_requested_again():
  jobs = [_Job("p0"), _Job("p1")]
  backend = _Backend(recreates=False, preempt={"p0"}, seconds=0.1)
  _, failed, out = _run(jobs, [_Slice("a"), _Slice("b")], backend)
  assert failed == [] and backend.finished == {"p0", "p1"}
  first, second = [s for s, p in _starts(backend) if p == "p0"]
  assert first != second  # Resumed on the other slice.
  assert len([e for e in backend.events if e == ("acquire", first)]) == 1
  assert f"slice {first} is gone" in out


def test_a_failed_point_does_not_stop_the_sweep():
  jobs = [_Job(f"p{i}") for i in range(4)]
  backend = _Backend(fail={"p1"})
  _, failed, out = _run(jobs, [_Slice("a")], backend)
  assert failed == ["p1"] and backend.finished == {"p0", "p2", "p3"}
  assert "p1: FAILED on a (exit status 1): exit 1" in out


def test_a_point_whose_run_lock_is_held_is_left_for_later_not_failed():
  backend = _Backend(locked={"p0"})
  _, unfinished, out = _run([_Job("p0"), _Job("p1")], [_Slice("a")], backend)
  assert unfinished == ["p0"] and backend.finished == {"p1"}
  assert "FAILED" not in out
  assert ("p0: busy: another run has it (exit 75); left to it. A later launch trains "
          "it if that run stops, or once its lock lapses (10 min") in out


def test_stop_saves_the_running_points_and_lets_every_slice_go():
  jobs = [_Job(f"p{i}") for i in range(4)]
  backend = _Backend(hang={"p0", "p1"})
  out = io.StringIO()
  sched = scheduler.Scheduler(jobs, [_Slice("a"), _Slice("b")], backend, poll_s=0.02,
                              status=scheduler.StatusLines(out),
                              is_finished=lambda job: job.name in backend.finished)
  threading.Timer(0.5, sched.stop).start()
  failed = sched.run()
  assert failed == ["p0", "p1", "p2", "p3"]
  assert sorted(e for e in backend.events if e[0] == "stop") == [
      ("stop", s, p) for s, p in sorted(_starts(backend))]
  assert sorted(e[1] for e in backend.events if e[0] == "release") == ["a", "b"]
  assert len(_starts(backend)) == 2  # Nothing started after the stop.
