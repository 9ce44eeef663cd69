"""The scheduler's backend on Cloud TPU: runs the gcloud commands of experiments/tpu.py
and experiments/queued_resources.py for one slice at a time.

With `create` (the --create flag), a slice is a queued resource the launcher requests,
waits for, requests again when it was preempted or deleted, and deletes when it has no
more points or the launch stops. Without it, a slice is an existing TPU VM, used while
its state is READY and never deleted.
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
import threading

from . import queued_resources as qr
from . import remote_env, scheduler, tpu



@dataclasses.dataclass(frozen=True)
class Request:
  """What --create requests for every slice."""
  accelerator: str
  runtime_version: str
  spot: bool


def _setup_failures(result: subprocess.CompletedProcess) -> str:
  """Each failing worker's "<worker>: environment step '<step>' failed" line with the
  last line of its log (the workers print it indented under their name)."""
  lines = result.stderr.splitlines()
  failures = []
  for line in lines:
    if "environment step" in line:
      worker = line.split(":", 1)[0]
      log = [l.split(":   ", 1)[1] for l in lines
             if l.startswith(f"{worker}:   ") and l.split(":   ", 1)[1].strip()]
      failures.append(line + (f" {log[-1].strip()}" if log else ""))
  if failures:
    return "; ".join(failures)
  return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]


class _Process:
  """A running gcloud command whose output is kept (its last lines) in memory."""

  def __init__(self, command: list[str]):
    self._proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    self.tail = collections.deque(maxlen=20)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self._proc.stdout:
      self.tail.append(line.rstrip("\n"))

  def wait(self, timeout=None) -> int:
    status = self._proc.wait(timeout=timeout)
    self._reader.join(timeout=5)
    return status

  def kill(self) -> None:
    self._proc.kill()


class GcloudBackend:
  """scheduler.Backend over gcloud."""

  def __init__(self, env: remote_env.RemoteEnv, archive_path: str, train_args,
               *, request: Request | None, poll_s: float, say,
               stopping: threading.Event):
    self._env, self._archive, self._train_args = env, archive_path, train_args
    self._request, self._poll_s, self._say = request, poll_s, say
    self._stopping = stopping
    self.recreates = request is not None
    self.chips = env.devices

  def point_key(self, job) -> str:
    return tpu.point_key(job.name, job.workdir)

  # ------------------------------------------------------------ slices

  def acquire(self, tpu_slice) -> bool:
    """Waits until the slice is up (requesting it first, with --create)."""
    if self._request is None:
      state = self._vm_state(tpu_slice)
      if state != "READY":
        self._say(f"slice {tpu_slice.name}: TPU VM state {state}, not READY; it takes "
                  "no points")
      return state == "READY"
    shown = None
    while not self._stopping.is_set():
      state = qr.state(tpu_slice)
      if state == qr.FAILED:
        self._say(f"slice {tpu_slice.name}: the request FAILED (its reason: "
                  f"{' '.join(qr.describe_command(tpu_slice)[:-1])}); it takes no points")
        return False
      if state == qr.SUSPENDED:  # Preempted: only a new request brings it back.
        self._say(f"slice {tpu_slice.name}: queued resource SUSPENDED; deleting it to "
                  "request it again")
        qr.delete(tpu_slice)
        state = None
      if state is None:
        r = self._request
        qr.create(tpu_slice, r.accelerator, r.runtime_version, r.spot)
        self._say(f"slice {tpu_slice.name}: requested {r.accelerator}"
                  f"{' (spot)' if r.spot else ''} in {tpu_slice.zone} as a queued "
                  "resource")
        state = "REQUESTED"
      if state == qr.ACTIVE:
        self._say(f"slice {tpu_slice.name}: ACTIVE")
        return True
      if state != shown:
        self._say(f"slice {tpu_slice.name}: {state}, waiting")
        shown = state
      self._stopping.wait(self._poll_s)
    return False

  def alive(self, tpu_slice) -> bool:
    try:
      if self._request is None:
        return self._vm_state(tpu_slice) == "READY"
      return qr.state(tpu_slice) == qr.ACTIVE
    except qr.CloudError as e:  # A failed poll is no proof of a lost slice.
      self._say(f"slice {tpu_slice.name}: could not read its state ({e})")
      return True

  def release(self, tpu_slice) -> None:
    """Deletes the slice if the launcher created it."""
    if self._request is None:
      return
    try:
      qr.delete(tpu_slice)
      self._say(f"slice {tpu_slice.name}: deleted")
    except qr.CloudError as e:
      self._say(f"slice {tpu_slice.name}: {e}")

  @staticmethod
  def _vm_state(tpu_slice) -> str:
    result = subprocess.run(tpu.describe_command(tpu_slice), capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
      return "NOT FOUND" if "NOT_FOUND" in result.stderr else "UNKNOWN"
    return result.stdout.strip()

  # ------------------------------------------------------------ code and points

  def prepare(self, tpu_slice):
    """Copies the code to every worker and runs the environment step there."""
    copy = subprocess.run(tpu.copy_code_command(tpu_slice, self._archive),
                          capture_output=True, text=True)
    if copy.returncode != 0:
      last = (copy.stderr.strip().splitlines() or ["no output"])[-1]
      return scheduler.Prepared(False, f"copying the code failed ({last})")
    self._say(f"slice {tpu_slice.name}: code copied; preparing the environment on "
              "every worker")
    for step in (remote_env.setup_script, remote_env.check_script):
      result = subprocess.run(tpu.ssh_command(tpu_slice, step(self._env)),
                              capture_output=True, text=True)
      if result.returncode != 0:
        return scheduler.Prepared(False, "environment step failed: "
                                  + _setup_failures(result))
    lines = result.stdout.splitlines()
    ready = [l[len(remote_env.READY):].strip() for l in lines
             if l.startswith(remote_env.READY)]
    running = frozenset(l[len(remote_env.RUNNING):].strip() for l in lines
                        if l.startswith(remote_env.RUNNING))
    self._say(f"slice {tpu_slice.name}: environment ready on {len(ready)} worker(s): "
              f"{ready[0] if ready else '?'}")
    return scheduler.Prepared(True, running=running)

  def start_point(self, tpu_slice, job) -> _Process:
    script = tpu.point_script(self._env, self._train_args(job), job.workdir, job.name)
    return _Process(tpu.ssh_command(tpu_slice, script))

  @staticmethod
  def output_tail(process: _Process) -> str:
    lines = [l for l in process.tail if l.strip()]
    return lines[-1] if lines else "no output"

  def stop_point(self, tpu_slice, job) -> None:
    subprocess.run(tpu.ssh_command(tpu_slice, tpu.stop_script(job.name, job.workdir)),
                   capture_output=True, text=True, timeout=900)
