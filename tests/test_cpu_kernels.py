"""The C++ kernels' cached library: a damaged one (garbled, truncated, or loading
without the kernels) is rebuilt, once.

Each run is a fresh process (the library is loaded once per process). The "compiler"
is a script that logs its call and copies the library this session already built, so
a rebuild costs no compile and the log counts the builds.
"""

import _ctypes
import fnmatch
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest

from mobilenet_jax.models.kernels import cpu_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loads the kernels as any run does and shows that they apply: a jit of the depthwise
# convolution calls the C++ kernel, which computes what XLA's convolution does.
_RUN = """
import jax.numpy as jnp
import jax
from mobilenet_jax.models.kernels import cpu_kernels, depthwise
x, kernel = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
assert cpu_kernels.applies(x, kernel), "the kernels do not apply"
text = jax.jit(lambda a: depthwise.depthwise_conv(a, kernel, 1, "ffi")).lower(x).as_text()
assert "mobilenet_depthwise_forward" in text, "the jit does not call the kernel"
y = depthwise.depthwise_conv(x, kernel, 1, "ffi")
assert jnp.allclose(y, depthwise.depthwise_conv(x, kernel, 1, "xla")), "wrong values"
print("kernels apply")
"""

needs_a_compiler = pytest.mark.skipif(not cpu_kernels.available(),
                                      reason="no C++ compiler: nothing is cached")


def test_the_sources_ship_with_the_package():
  # pip installs only what package-data names; without the sources the kernels
  # silently fall back to pure JAX.
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
  globs = package_data[cpu_kernels.__name__.rpartition(".")[0]]
  sources = cpu_kernels._SOURCES + cpu_kernels._HEADERS  # pylint: disable=protected-access
  assert all(any(fnmatch.fnmatch(name, g) for g in globs) for name in sources)


@pytest.fixture(name="cache")
def _cache(tmp_path, monkeypatch):
  """(library path, build log, the good library's bytes) in an empty cache whose
  compiler is the copying script."""
  built = cpu_kernels._library_path()  # pylint: disable=protected-access
  log = tmp_path / "builds.log"
  compiler = tmp_path / "fake-c++"
  compiler.write_text(
      "#!/bin/sh\n"
      f"echo build >> '{log}'\n"
      'while [ "$#" -gt 1 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
      f"cp '{built}' \"$out\"\n")
  compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("CXX", str(compiler))
  monkeypatch.setenv("MOBILENET_JAX_COMPILE_CACHE", str(tmp_path / "cache"))
  monkeypatch.delenv(cpu_kernels.DISABLE_ENV, raising=False)
  with open(built, "rb") as f:
    good = f.read()
  return cpu_kernels._library_path(), log, good  # pylint: disable=protected-access


def _run() -> subprocess.CompletedProcess:
  """One process that loads the kernels (from the environment's cache)."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-c", _RUN], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _builds(log) -> int:
  return len(log.read_text().splitlines()) if log.exists() else 0


def _damage(path: str, good: bytes, damage: str) -> None:
  if damage == "garbled":
    with open(path, "r+b") as f:
      f.seek(len(good) // 2)
      f.write(os.urandom(4096))
  elif damage == "truncated":  # What a full disk leaves; the loader would crash on it.
    os.truncate(path, len(good) // 2)
  else:  # A library that loads, with its checksum, but has no kernels in it.
    shutil.copy(_ctypes.__file__, path)
    with open(path, "rb") as f, open(path + ".sha256", "w") as checksum:
      checksum.write(hashlib.sha256(f.read()).hexdigest())


@needs_a_compiler
@pytest.mark.parametrize("damage", ["garbled", "truncated", "no_kernels"])
def test_a_damaged_library_is_rebuilt_once(cache, damage):
  path, log, good = cache
  cpu_kernels._load_or_build(path)  # pylint: disable=protected-access
  assert _builds(log) == 1
  _damage(path, good, damage)

  first = _run()
  assert first.returncode == 0 and "kernels apply" in first.stdout, first.stderr[-3000:]
  why = "do not load" if damage == "no_kernels" else "do not match their checksum"
  assert why in first.stderr and "rebuilding" in first.stderr
  assert _builds(log) == 2
  with open(path, "rb") as f:
    assert f.read() == good
  assert sorted(os.listdir(os.path.dirname(path))) == sorted(  # No temporary file left.
      os.path.basename(p) for p in (path, path + ".sha256"))
  if damage == "garbled":
    second = _run()  # Later runs load the rebuilt library.
    assert second.returncode == 0 and "kernels apply" in second.stdout, second.stderr
    assert _builds(log) == 2 and "rebuilding" not in second.stderr
