"""A fake Google Cloud for the TPU launcher's tests (the CLI is tests/fake_gcloud.py).

`make(...)` builds the fake's directory and a `gcloud` on a PATH for the launcher;
its VMs' `python3` is this machine's Python 3.10 (as on a stock TPU VM image), and
`python3.11` (unless a worker's override drops it) the Python running the tests,
whose installed packages the VMs see through PYTHONPATH, so that pip finds every
requirement installed and never downloads.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_GCLOUD = os.path.join(REPO, "tests", "fake_gcloud.py")
_NOT_TOOLS = ("python", "pip", "pydoc", "uv", "hostname", "gcloud")


def python310() -> str | None:
  """A Python 3.10 interpreter of this machine, or None."""
  candidates = [shutil.which("python3.10"),
                *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/"
                                                     "python3.10"))),
                "/usr/bin/python3.10"]
  for path in filter(None, candidates):
    try:
      out = subprocess.run([path, "-c", "import sys; print(sys.executable, "
                            "sys.version_info[:2] == (3, 10))"],
                           capture_output=True, text=True, timeout=60)
    except OSError:
      continue
    if out.returncode == 0 and out.stdout.split()[-1] == "True":
      return out.stdout.split()[0]
  return None


def _system_tools(directory: str) -> str:
  """A directory of links to the system's commands, without any Python or uv."""
  os.makedirs(directory)
  for source in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
    if not os.path.isdir(source):
      continue
    for name in os.listdir(source):
      link = os.path.join(directory, name)
      if not name.startswith(_NOT_TOOLS) and not os.path.lexists(link):
        os.symlink(os.path.join(source, name), link)
  return directory


def _compile_cache() -> dict:
  """The tests' compilation cache (tests/conftest.py), shared with the VMs: a cache,
  so the VMs' runs compute the same and skip compiling what the tests compiled."""
  name = "MOBILENET_JAX_COMPILE_CACHE"
  return {name: os.environ[name]} if name in os.environ else {}


@dataclasses.dataclass
class FakeCloud:
  """The fake's directory, and the environment that puts its gcloud first on PATH."""
  directory: str
  env: dict

  def _read(self, name: str) -> str:
    path = os.path.join(self.directory, name)
    return open(path).read() if os.path.exists(path) else ""

  def calls(self) -> list[list[str]]:
    """Every gcloud call's arguments, in order."""
    return [json.loads(l)["argv"] for l in self._read("calls.jsonl").splitlines()]

  def python3_calls(self) -> list[str]:
    """Every use of a VM's system python3: "<worker>: <arguments>"."""
    return self._read("python3.log").splitlines()

  def uv_calls(self) -> list[str]:
    return self._read("uv.log").splitlines()

  def state(self) -> dict:
    return json.loads(self._read("state.json") or '{"qrs": {}, "vms": {}}')

  def add_vm(self, name: str, workers: int = 1) -> None:
    """An existing TPU VM, READY (for launches without --create)."""
    sys.path.insert(0, os.path.dirname(FAKE_GCLOUD))
    try:
      import fake_gcloud  # pylint: disable=g-import-not-at-top
    finally:
      sys.path.pop(0)
    old = os.environ.get("FAKE_GCLOUD_DIR")
    os.environ["FAKE_GCLOUD_DIR"] = self.directory
    try:
      fake_gcloud.add_vm(name, workers)
    finally:
      if old is None:
        del os.environ["FAKE_GCLOUD_DIR"]
      else:
        os.environ["FAKE_GCLOUD_DIR"] = old


def make(tmp_path, python3: str, *, preempt=(), worker_overrides=None, workers=None,
         worker_env=None, provision_polls: int = 1) -> FakeCloud:
  """A fake cloud under `tmp_path`; `python3` is the VMs' system Python (3.10)."""
  directory = os.path.join(str(tmp_path), "fake-cloud")
  bin_dir = os.path.join(directory, "bin")
  os.makedirs(bin_dir)
  with open(os.path.join(bin_dir, "gcloud"), "w") as f:
    f.write(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_GCLOUD}" "$@"\n')
  os.chmod(os.path.join(bin_dir, "gcloud"), 0o755)
  config = {
      "python3": python3, "python311": sys.executable,
      "sysbin": _system_tools(os.path.join(directory, "sysbin")),
      "provision_polls": provision_polls, "preempt": list(preempt),
      "worker_overrides": worker_overrides or {}, "workers": workers or {},
      # What the VMs have installed: this Python's packages (the code comes shipped).
      "env": {"PYTHONPATH": sysconfig.get_paths()["purelib"], "JAX_PLATFORMS": "cpu",
              **_compile_cache(), **(worker_env or {})},
  }
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
  env = dict(os.environ, FAKE_GCLOUD_DIR=directory,
             PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
  return FakeCloud(directory, env)
