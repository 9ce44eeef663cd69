"""The gcloud commands that train sweep points on Cloud TPU VM slices.

Per slice, once: copy this code (a `git archive` of HEAD, built locally) to every
worker. Per point:

  gcloud compute tpus tpu-vm ssh NAME --zone=Z [--project=P] --worker=all \
      --command='<install if needed>; <train under nohup, log to a file; wait>'

On every worker the remote script unpacks the code into ~/mobilenet-jax-<version>
and installs its requirements with `jax[tpu]` (once: a marker file records it), then
starts `python3 -m mobilenet_jax.main ... --distributed` under nohup, so the run
survives a dropped ssh connection, writing its output to ~/mobilenet-jax-logs and,
when it ends, to WORKDIR/train.<host>.log. The script waits for the run, so the ssh
command returns when the point is done; started again while the run is still alive
(after a dropped connection) it waits for that run instead of starting a second one.
Nothing here touches the network: these are strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex

import jax

from mobilenet_jax.errors import ConfigError

# Google's index of libtpu wheels that `pip install jax[tpu]` needs.
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
REMOTE_PYTHON = "python3"  # The TPU VM image's Python; never the local interpreter.


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU VM slice: its name, zone and (optional) project."""
  name: str
  zone: str
  project: str | None = None

  def gcloud_args(self) -> list[str]:
    project = [f"--project={self.project}"] if self.project else []
    return [f"--zone={self.zone}", *project, "--worker=all"]


def archive_name(version: str) -> str:
  """The code tarball's file name for `version` (a git commit, maybe "-dirty")."""
  return f"mobilenet-jax-{version}.tar.gz"


def copy_code_command(tpu: Slice, archive_path: str) -> list[str]:
  """Copies the local code tarball into the home directory of every worker."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive_path, f"{tpu.name}:~/",
          *tpu.gcloud_args()]


def _install_lines(version: str) -> list[str]:
  code = f"$HOME/mobilenet-jax-{version}"
  jax_tpu = shlex.quote(f"jax[tpu]=={jax.__version__}")  # The version tested here.
  return [
      f"CODE={code}",
      'if [ ! -e "$CODE/.installed" ]; then { '
      f'mkdir -p "$CODE" && tar -xzf "$HOME/{archive_name(version)}" -C "$CODE" && '
      f'{REMOTE_PYTHON} -m pip install --quiet -r "$CODE/requirements.txt" {jax_tpu} '
      f'-f {LIBTPU_INDEX} && touch "$CODE/.installed"; }} || '
      '{ echo "$(hostname): installing the code failed" >&2; exit 1; }; fi',
      'cd "$CODE"',
  ]


def _copy_log(log: str, workdir: str) -> str:
  target = f"{workdir}/train.$(hostname).log"
  if workdir.startswith("gs://"):
    return f"gcloud storage cp {log} {target}"
  return f"mkdir -p {shlex.quote(workdir)} && cp {log} {target}"


def remote_script(train_args: list[str], workdir: str, version: str, key: str) -> str:
  """The bash script each worker runs for one point (`train_args` after `python3`)."""
  tag = hashlib.sha1(workdir.encode()).hexdigest()[:10]
  logs = "$HOME/mobilenet-jax-logs"
  log, pid = f"{logs}/{key}.{tag}.log", f"{logs}/{key}.{tag}.pid"
  train = " ".join([REMOTE_PYTHON, *map(shlex.quote, train_args)])
  # The run and the copy of its log both live under nohup, beyond the ssh session.
  job = f"{train} > {log} 2>&1; status=$?; {_copy_log(log, workdir)}; exit $status"
  lines = _install_lines(version) + [
      f"mkdir -p {logs}",
      f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then '
      f'echo "$(hostname): {key} is already running; waiting for it"; '
      f'while kill -0 "$(cat {pid})" 2>/dev/null; do sleep 60; done; exit 0; fi',
      f"nohup bash -c {shlex.quote(job)} < /dev/null > /dev/null 2>&1 &",
      f"echo $! > {pid}",
      f'echo "$(hostname): started {key}, log {log}"',
      "wait $!",
  ]
  # "&" already ends a command: no ";" after it.
  return "; ".join(lines).replace("&; ", "& ")


def ssh_command(tpu: Slice, script: str) -> list[str]:
  """The gcloud command that runs `script` on every worker of `tpu`."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu.name, *tpu.gcloud_args(),
          f"--command={script}"]


def parse_slices(names: str, zone: str | None, project: str | None) -> list[Slice]:
  """--tpu=NAME[,NAME...] with --zone (required) and --project."""
  if not zone:
    raise ConfigError("--tpu needs --zone=ZONE (the zone the TPU VMs are in).")
  return [Slice(name.strip(), zone, project) for name in names.split(",") if name.strip()]
