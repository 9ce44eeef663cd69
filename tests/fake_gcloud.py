"""A fake `gcloud` for the TPU launcher's tests: queued resources and TPU VMs on this
machine, no cloud.

Installed as `gcloud` on PATH by tests/fake_cloud.py; everything lives in
$FAKE_GCLOUD_DIR: config.json (what the test set up), state.json (queued resources and
VMs), calls.jsonl (every call's arguments), nodes/<vm>/w<i>/ (each worker's home and
bin). A queued resource waits `provision_polls` describes, then is ACTIVE with a VM of
`workers` workers. `tpu-vm ssh --worker=all --command=CMD` runs `bash -c CMD` once per
worker, in that worker's home, with PATH giving the "VM's" tools: `python3` is a
Python 3.10 (each call logged to python3.log), `python3.11` exists unless the worker's
override drops it, `hostname` prints <vm>-w-<i>. Every process started on a VM carries
FAKE_TPU_VM in its environment, so that a preemption (a trigger in config.json: a file
that comes to contain a text, while an ssh command containing a given text runs) or a
deletion can find and stop all of them: SIGTERM, as a VM's shutdown gives, then
SIGKILL. A preempted queued resource is SUSPENDED; its ssh commands exit with 255, as
ssh does when the connection drops.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

SSH_LOST = 255


def _path(*parts: str) -> str:
  return os.path.join(os.environ["FAKE_GCLOUD_DIR"], *parts)


def _config() -> dict:
  with open(_path("config.json")) as f:
    return json.load(f)


@contextlib.contextmanager
def _state():
  """state.json, locked, written back on exit."""
  with open(_path("state.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      with open(_path("state.json")) as f:
        state = json.load(f)
    except FileNotFoundError:
      state = {"qrs": {}, "vms": {}, "fired": []}
    yield state
    with open(_path("state.json.tmp"), "w") as f:
      json.dump(state, f, indent=1)
    os.replace(_path("state.json.tmp"), _path("state.json"))


def _fail(message: str, status: int = 1):
  print(f"ERROR: (gcloud) {message}", file=sys.stderr, flush=True)
  sys.exit(status)


# ------------------------------------------------------------------ VMs

def _write_script(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write("#!/bin/sh\n" + text + "\n")
  os.chmod(path, 0o755)


def _make_vm(name: str, workers: int, generation: int) -> None:
  """A fresh VM: every worker gets an empty home and the VM's bin directory."""
  config = _config()
  shutil.rmtree(_path("nodes", name), ignore_errors=True)
  for i in range(workers):
    worker = f"{name}-w-{i}"
    override = config.get("worker_overrides", {}).get(worker, {})
    home, bin_dir = _path("nodes", name, f"w{i}", "home"), _path("nodes", name, f"w{i}",
                                                                 "bin")
    os.makedirs(home)
    os.makedirs(bin_dir)
    _write_script(os.path.join(bin_dir, "hostname"), f"echo {worker}")
    _write_script(os.path.join(bin_dir, "python3"),
                  f'echo "{worker}: $*" >> {_path("python3.log")}\n'
                  f'exec {config["python3"]} "$@"')
    if not override.get("no_python311"):
      _write_script(os.path.join(bin_dir, "python3.11"),
                    f'exec {config["python311"]} "$@"')
    if override.get("fake_uv"):  # `uv python install` puts a 3.11 into the home.
      fetched = os.path.join(home, ".local/share/uv/python/cpython-3.11/bin/python3.11")
      _write_script(os.path.join(bin_dir, "uv"), "\n".join([
          f'echo "{worker}: uv $*" >> {_path("uv.log")}',
          'if [ "$1 $2" = "python install" ]; then',
          f'  mkdir -p {os.path.dirname(fetched)}',
          f"  printf '#!/bin/sh\\nexec {config['python311']} \"$@\"\\n' > {fetched}",
          f"  chmod +x {fetched}; exit 0; fi",
          f'if [ "$1 $2" = "python find" ] && [ -x {fetched} ]; then echo {fetched}; '
          "exit 0; fi",
          "exit 2"]))


def _vm_processes(tag: str) -> list[int]:
  """Live (not zombie) processes whose environment carries FAKE_TPU_VM=tag."""
  marker = f"FAKE_TPU_VM={tag}".encode()
  pids = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/environ", "rb") as f:
        if marker not in f.read().split(b"\0"):
          continue
      with open(f"/proc/{entry}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
          pids.append(int(entry))
    except OSError:
      continue
  return pids


def _shut_down(tag: str, grace_s: float = 180.0) -> None:
  """Every process of the VM gets SIGTERM, then SIGKILL after `grace_s`."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in _vm_processes(tag):
      with contextlib.suppress(OSError):
        os.kill(pid, sig)
    deadline = time.time() + grace_s
    while _vm_processes(tag) and time.time() < deadline:
      time.sleep(0.2)
    if not _vm_processes(tag):
      return


def _remove_vm(state: dict, name: str, new_state: str | None) -> str | None:
  """Takes the VM away (state `new_state`, or gone); returns its process tag."""
  vm = state["vms"].get(name)
  if vm is None:
    return None
  if new_state:
    vm["state"] = new_state
  else:
    del state["vms"][name]
  return f"{name}#{vm['generation']}"


# ------------------------------------------------------------------ queued resources

def _qr_create(args) -> None:
  with _state() as state:
    if args.name in state["qrs"]:
      _fail(f"ALREADY_EXISTS: queued resource {args.name} exists")
    state["qrs"][args.name] = {
        "state": "WAITING_FOR_RESOURCES", "node": args.node_id, "zone": args.zone,
        "accelerator": args.accelerator_type, "runtime": args.runtime_version,
        "spot": args.spot, "polls_left": _config().get("provision_polls", 1)}
  print(f"Create request issued for: [{args.name}]")


def _qr_describe(args) -> None:
  config = _config()
  with _state() as state:
    qr = state["qrs"].get(args.name)
    if qr is None:
      _fail(f"NOT_FOUND: Resource 'queuedResources/{args.name}' was not found")
    if qr["state"] == "WAITING_FOR_RESOURCES":
      qr["polls_left"] -= 1
      if qr["polls_left"] <= 0:
        qr["state"] = "ACTIVE"
        generation = state.setdefault("generation", 0) + 1
        state["generation"] = generation
        workers = config.get("workers", {}).get(qr["node"], 1)
        state["vms"][qr["node"]] = {"state": "READY", "workers": workers,
                                    "generation": generation, "qr": args.name}
        _make_vm(qr["node"], workers, generation)
    print(qr["state"])


def _qr_delete(args) -> None:
  with _state() as state:
    qr = state["qrs"].pop(args.name, None)
    if qr is None:
      _fail(f"NOT_FOUND: Resource 'queuedResources/{args.name}' was not found")
    tag = _remove_vm(state, qr["node"], None)
  if tag:
    _shut_down(tag)
    shutil.rmtree(_path("nodes", qr["node"]), ignore_errors=True)
  print(f"Deleted queued resource [{args.name}].")


# ------------------------------------------------------------------ TPU VMs

def _vm_describe(args) -> None:
  with _state() as state:
    vm = state["vms"].get(args.name)
  if vm is None:
    _fail(f"NOT_FOUND: Resource 'nodes/{args.name}' was not found")
  print(vm["state"])


def _ready_vm(name: str) -> dict:
  with _state() as state:
    vm = state["vms"].get(name)
  if vm is None or vm["state"] != "READY":
    _fail(f"could not connect to {name}: "
          f"{'NOT_FOUND' if vm is None else vm['state']}", SSH_LOST)
  return vm


def _scp(args) -> None:
  *sources, dest = args.paths
  name = dest.split(":", 1)[0]
  vm = _ready_vm(name)
  for i in range(vm["workers"]):
    for source in sources:
      shutil.copy(source, _path("nodes", name, f"w{i}", "home"))


def _free_slurm_job_id() -> int:
  """A SLURM job id whose coordinator port (JAX derives it from the id) is free."""
  while True:
    job_id = random.randrange(1, 10**6)
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", job_id % 4096 + 61440))
        return job_id
      except OSError:
        continue


def _worker_env(name: str, vm: dict, i: int, job_id: int) -> dict:
  """What a process sees on worker i: the VM's tools, its home, a cluster of workers."""
  config = _config()
  env = {"PATH": f"{_path('nodes', name, f'w{i}', 'bin')}:{config['sysbin']}",
         "HOME": _path("nodes", name, f"w{i}", "home"), "LANG": "C.UTF-8",
         "FAKE_TPU_VM": f"{name}#{vm['generation']}",
         "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
         # How jax.distributed.initialize() finds the VM's workers here (as on SLURM).
         "SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost",
         "SLURM_NTASKS": str(vm["workers"]), "SLURM_PROCID": str(i),
         "SLURM_LOCALID": "0"}
  env.update(config.get("env", {}))
  return env


def _trigger(name: str, command: str) -> bool:
  """Whether a preemption trigger of config.json fires now for this ssh command."""
  for i, trig in enumerate(_config().get("preempt", [])):
    if trig["command_contains"] not in command:
      continue
    try:
      with open(trig["file"]) as f:
        if trig["contains"] not in f.read():
          continue
    except OSError:
      continue
    with _state() as state:
      if i in state["fired"]:
        continue
      state["fired"].append(i)
      vm = state["vms"].get(name)
      if vm is None:
        return False
      if vm.get("qr") in state["qrs"]:
        state["qrs"][vm["qr"]]["state"] = "SUSPENDED"
      _remove_vm(state, name, "PREEMPTED")
    return True
  return False


def _ssh(args) -> None:
  vm = _ready_vm(args.name)
  job_id = _free_slurm_job_id()
  procs = [subprocess.Popen(["bash", "-c", args.command],
                            cwd=_path("nodes", args.name, f"w{i}", "home"),
                            env=_worker_env(args.name, vm, i, job_id),
                            start_new_session=True)
           for i in range(vm["workers"])]
  tag = f"{args.name}#{vm['generation']}"
  while any(p.poll() is None for p in procs):
    if _trigger(args.name, args.command):
      _shut_down(tag)
      shutil.rmtree(_path("nodes", args.name), ignore_errors=True)
    if not _still_up(args.name, vm):
      for p in procs:
        p.wait()
      _fail(f"connection to {args.name} closed by remote host", SSH_LOST)
    time.sleep(0.2)
  if not _still_up(args.name, vm):
    _fail(f"connection to {args.name} closed by remote host", SSH_LOST)
  # A remote command killed by a signal: ssh reports 255.
  statuses = [SSH_LOST if p.returncode < 0 else p.returncode for p in procs]
  sys.exit(max(statuses))


def _still_up(name: str, vm: dict) -> bool:
  with _state() as state:
    now = state["vms"].get(name)
  return bool(now) and now["generation"] == vm["generation"] and now["state"] == "READY"


def add_vm(name: str, workers: int = 1) -> None:
  """An existing TPU VM (as if made before the launch), READY."""
  with _state() as state:
    generation = state.setdefault("generation", 0) + 1
    state["generation"] = generation
    state["vms"][name] = {"state": "READY", "workers": workers, "generation": generation}
  _make_vm(name, workers, generation)


# ------------------------------------------------------------------ command line

def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="gcloud")
  parser.add_argument("--quiet", action="store_true")
  groups = parser.add_subparsers(dest="group", required=True)
  compute = groups.add_parser("compute").add_subparsers(dest="sub", required=True)
  tpus = compute.add_parser("tpus").add_subparsers(dest="kind", required=True)
  qrs = tpus.add_parser("queued-resources").add_subparsers(dest="verb", required=True)
  vms = tpus.add_parser("tpu-vm").add_subparsers(dest="verb", required=True)

  def command(parent, verb, handler, *positionals):
    sub = parent.add_parser(verb)
    for positional in positionals:
      sub.add_argument(positional, **({"nargs": "+"} if positional == "paths" else {}))
    sub.add_argument("--zone", required=True)
    sub.add_argument("--project")
    sub.add_argument("--quiet", action="store_true")
    sub.set_defaults(handler=handler)
    return sub

  create = command(qrs, "create", _qr_create, "name")
  create.add_argument("--node-id", required=True)
  create.add_argument("--accelerator-type", required=True)
  create.add_argument("--runtime-version", required=True)
  create.add_argument("--spot", action="store_true")
  create.add_argument("--async", action="store_true")
  command(qrs, "describe", _qr_describe, "name").add_argument(
      "--format", choices=["value(state.state)"])
  delete = command(qrs, "delete", _qr_delete, "name")
  delete.add_argument("--force", action="store_true", required=True)
  delete.add_argument("--async", action="store_true")
  command(vms, "describe", _vm_describe, "name").add_argument(
      "--format", choices=["value(state)"])
  ssh = command(vms, "ssh", _ssh, "name")
  ssh.add_argument("--worker", choices=["all"], required=True)
  ssh.add_argument("--command", required=True)
  command(vms, "scp", _scp, "paths").add_argument("--worker", choices=["all"],
                                                   required=True)
  return parser


def main(argv: list[str]) -> None:
  with open(_path("calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": argv, "time": time.time()}) + "\n")
  args = _parser().parse_args(argv)
  args.handler(args)


if __name__ == "__main__":
  main(sys.argv[1:])
