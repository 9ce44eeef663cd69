"""A sweep on Cloud TPU slices, from the launcher's settings: the run (scheduler.py over
tpu_backend.py) and, for --dry_run, the plan with every command it would run."""

from __future__ import annotations

import dataclasses
import shlex
import signal
import tempfile
import threading

from . import code_archive, queued_resources, remote_env, scheduler, tpu, \
    tpu_backend


@dataclasses.dataclass(frozen=True)
class Settings:
  """The TPU flags of experiments/launch.py."""
  slices: tuple[tpu.Slice, ...]
  accelerator: str | None = None
  create: bool = False
  spot: bool = False
  runtime_version: str | None = None
  dirty: str = "refuse"
  jax_requirement: str = dataclasses.field(
      default_factory=remote_env.default_jax_requirement)
  poll_s: float = 60.0

  def request(self) -> tpu_backend.Request | None:
    """What --create requests, or None."""
    if not self.create:
      return None
    runtime = self.runtime_version or queued_resources.runtime_version(self.accelerator)
    return tpu_backend.Request(self.accelerator, runtime, self.spot)

  def remote_env(self, version: code_archive.CodeVersion) -> remote_env.RemoteEnv:
    """The workers' environment for the code `version`."""
    devices = queued_resources.chips(self.accelerator) if self.accelerator else None
    return remote_env.RemoteEnv(
        code=version.name, archive=code_archive.archive_name(version),
        requirements=code_archive.read_file(version, "requirements.txt"),
        jax_requirement=self.jax_requirement, devices=devices)


def _train_args(job) -> list[str]:
  return job.train_args(distributed=True)


def point_command(job, tpu_slice: tpu.Slice, env: remote_env.RemoteEnv) -> list[str]:
  """The gcloud command that trains `job` on every worker of `tpu_slice`."""
  script = tpu.point_script(env, _train_args(job), job.workdir, job.name)
  return tpu.ssh_command(tpu_slice, script)


def commands(jobs, settings: Settings, version) -> dict[str, list[str]]:
  """Each job's command on the slice it would take first (for the manifest)."""
  env, slices = settings.remote_env(version), settings.slices
  return {job.name: point_command(job, slices[i % len(slices)], env)
          for i, job in enumerate(jobs)}


def run(jobs, settings: Settings, version, out) -> list[str]:
  """Runs `jobs` on the slices; the names of those that did not finish."""
  status, stopping = scheduler.StatusLines(out), threading.Event()
  request = settings.request()
  with tempfile.TemporaryDirectory() as tmp:
    archive = code_archive.build(version, tmp, settings.dirty)
    backend = tpu_backend.GcloudBackend(
        settings.remote_env(version), archive, _train_args, request=request,
        poll_s=settings.poll_s, say=status.say, stopping=stopping)
    sched = scheduler.Scheduler(jobs, settings.slices, backend, poll_s=settings.poll_s,
                                status=status, stopping=stopping)
    signal.signal(signal.SIGTERM,
                  lambda *_: threading.Thread(target=sched.stop).start())
    try:
      return sched.run()
    except BaseException:
      if request:  # Never leave slices this launch created behind.
        for tpu_slice in settings.slices:
          queued_resources.delete(tpu_slice)
      raise


def print_plan(todo, settings: Settings, version, out) -> None:
  """A dry run's output: the plan as comments, then every command, ready to read."""
  env, request, slices = settings.remote_env(version), settings.request(), settings.slices
  say = lambda text: print(text, file=out)
  kind = (f"queued resources of {request.accelerator}{' (spot)' if request.spot else ''}"
          " that this launch requests and deletes" if request else "existing TPU VMs")
  say(f"# {len(todo)} points on {len(slices)} slices ({kind}); each slice takes the "
      "next unfinished point when it is free; a point on a preempted slice resumes "
      "from its last checkpoint.")
  if request:
    say("# Request every slice, then poll each until its state is ACTIVE:")
    for s in slices:
      say(shlex.join(queued_resources.create_command(
          s, request.accelerator, request.runtime_version, request.spot)))
    say(shlex.join(queued_resources.describe_command(slices[0])))
  shipped = "the working tree as it is" if version.dirty else "HEAD"
  say(f"# The code ({shipped}, {version.name}), copied to every worker of each slice:")
  say(code_archive.build_command(version))
  for s in slices:
    say(shlex.join(tpu.copy_code_command(s, code_archive.archive_name(version))))
  say(f"# The environment step on every worker: a venv with Python >= "
      f"{'.'.join(map(str, remote_env.MIN_PYTHON))}, requirements.txt and "
      f"{env.jax_requirement}, then a device check:")
  for s in slices:
    say(shlex.join(tpu.ssh_command(s, remote_env.setup_script(env))))
  say("# Once every worker of a slice is installed, the check on all of them:")
  for s in slices:
    say(shlex.join(tpu.ssh_command(s, remote_env.check_script(env))))
  say("# One command per point (shown on the slice it would take first):")
  for i, job in enumerate(todo):
    say(shlex.join(point_command(job, slices[i % len(slices)], env)))
  if request:
    say("# When the sweep ends or is stopped:")
    for s in slices:
      say(shlex.join(queued_resources.delete_command(s)))
