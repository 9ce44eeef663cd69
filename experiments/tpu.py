"""The gcloud commands that prepare Cloud TPU VM slices and train sweep points there.

Per slice (and again after a preempted slice is re-created): copy the code tarball to
every worker, then run the environment step (experiments/remote_env.py). Per point:

  gcloud compute tpus tpu-vm ssh NAME --zone=Z [--project=P] --worker=all \
      --command='<train under nohup in its own process group, log to a file; wait>'

On every worker the point's script starts `<venv>/bin/python -m mobilenet_jax.main ...
--distributed` in the code directory under nohup (so the run survives a dropped ssh
connection), writing its output to ~/mobilenet-jax-logs and, when it ends, to
WORKDIR/train.<host>.log. The script waits for the run and exits with its status
(after the last lines of a failed run's log);
started again while the run is alive (after a dropped connection) it waits for that
run instead of starting a second one. `stop_script` sends the run SIGTERM, so that it
saves a checkpoint at its next step and exits, as on a preemption notice. Nothing here
touches the network: these are strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex

from mobilenet_jax.errors import ConfigError

from . import remote_env


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU VM slice: its name, zone and (optional) project."""
  name: str
  zone: str
  project: str | None = None

  def location_args(self) -> list[str]:
    project = [f"--project={self.project}"] if self.project else []
    return [f"--zone={self.zone}", *project]

  def gcloud_args(self) -> list[str]:
    return [*self.location_args(), "--worker=all"]


def copy_code_command(tpu: Slice, archive_path: str) -> list[str]:
  """Copies the local code tarball into the home directory of every worker."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive_path, f"{tpu.name}:~/",
          *tpu.gcloud_args()]


def ssh_command(tpu: Slice, script: str) -> list[str]:
  """The gcloud command that runs `script` on every worker of `tpu`."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu.name, *tpu.gcloud_args(),
          f"--command={script}"]


def describe_command(tpu: Slice) -> list[str]:
  """Prints the TPU VM's state (READY, PREEMPTED, ...)."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "describe", tpu.name,
          *tpu.location_args(), "--format=value(state)"]


def point_key(name: str, workdir: str) -> str:
  """The name of a point's log and pid files on the workers."""
  return f"{name}.{hashlib.sha1(workdir.encode()).hexdigest()[:10]}"


def _copy_log(log: str, workdir: str) -> str:
  target = f"{workdir}/train.$(hostname).log"
  if workdir.startswith("gs://"):
    return f"gcloud storage cp {log} {target}"
  return f"mkdir -p {shlex.quote(workdir)} && cp {log} {target}"


def point_script(env: remote_env.RemoteEnv, train_args: list[str], workdir: str,
                 name: str) -> str:
  """The bash script each worker runs for one point (`train_args` after `python`)."""
  key = point_key(name, workdir)
  logs = remote_env.LOGS
  log, pid, status = (f"{logs}/{key}.{ext}" for ext in ("log", "pid", "status"))
  # The wrapper outlives SIGTERM (its trap) so that it still copies the log.
  job = (f"trap true TERM; {env.train_command(train_args)} > {log} 2>&1; status=$?; "
         f"echo $status > {status}; {_copy_log(log, workdir)}; exit $status")
  lines = [
      "set +m",  # No job control: the run below stays out of a new process group...
      f"mkdir -p {logs}",
      f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then '
      f'echo "$(hostname): {name} is already running; waiting for it"; '
      f'while kill -0 "$(cat {pid})" 2>/dev/null; do sleep 10; done; '
      f'exit "$(cat {status} 2>/dev/null || echo 1)"; fi',
      f'cd "{env.code_dir}" || {{ echo "$(hostname): no code in {env.code_dir}" >&2; '
      "exit 1; }",
      f"rm -f {status}",
      # ...until setsid gives it its own: a stop signals the run and nothing else.
      f"setsid nohup bash -c {shlex.quote(job)} < /dev/null > /dev/null 2>&1 &",
      f"echo $! > {pid}",
      f'echo "$(hostname): started {name}, log {log}"',
      # The run's status; a failed run's last lines (its `error:` line) on stderr.
      "wait $!; status=$?",
      f'[ $status -eq 0 ] || tail -n 3 {log} | sed "s/^/$(hostname): /" >&2',
      "exit $status",
  ]
  return "\n".join(lines)


def stop_script(name: str, workdir: str, grace_s: int = 300) -> str:
  """Sends the point's run SIGTERM on every worker and waits (up to `grace_s`) for it
  to save its checkpoint and exit."""
  pid = f"{remote_env.LOGS}/{point_key(name, workdir)}.pid"
  return "\n".join([
      f'[ -f {pid} ] || exit 0', f'P=$(cat {pid})',
      'kill -TERM -- "-$P" 2>/dev/null || exit 0',
      f'for i in $(seq {grace_s}); do kill -0 "$P" 2>/dev/null || exit 0; sleep 1; done',
      'echo "$(hostname): the run did not stop in time" >&2; exit 1',
  ])


def parse_slices(names: str, zone: str | None, project: str | None) -> list[Slice]:
  """--tpu=NAME[,NAME...] with --zone (required) and --project."""
  if not zone:
    raise ConfigError("--tpu needs --zone=ZONE (the zone the TPU VMs are in).")
  return [Slice(name.strip(), zone, project) for name in names.split(",") if name.strip()]
