"""Process-wide speed settings shared by every command: compile cache, XLA:CPU, huge pages.

`prepare_process(cli_module)` is the first call of `main`, `evaluate`, `predict` and
`benchmark`:

- **Huge pages** (Linux): XLA:CPU allocates its large temporaries afresh on every call,
 and with 4 KiB pages their first-touch page faults cost about as much as the
 arithmetic (benchmarks/RESULTS.md). glibc reads `GLIBC_TUNABLES` only when a process
 starts, so the command re-executes itself once with `glibc.malloc.hugetlb=1` added.
 Off: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` (any value already there is kept).
- **JAX's persistent compilation cache**, on by default in
 `$XDG_CACHE_HOME/mobilenet_jax/jax` (`~/.cache/...`): the second run of a config, a
 resumed run and every sweep point after the first load their compiled steps instead
 of compiling them. `MOBILENET_JAX_COMPILE_CACHE=DIR` moves it, `=0` turns it off; a
 `JAX_COMPILATION_CACHE_DIR` set by the user wins.

`compiler_options(purpose)` gives the per-jit XLA:CPU options measured fastest for
"train" or "inference" jits (None on GPU and TPU, where nothing here applies).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from typing import Iterator

CACHE_ENV = "MOBILENET_JAX_COMPILE_CACHE"
_OFF = ("0", "off", "false", "no", "")
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
# Compiles shorter than this are not worth a file: the tiny jits of initialization
# and the data pipeline each compile in milliseconds.
CACHE_MIN_COMPILE_SECS = 0.5

# XLA:CPU routes dots, convolutions and reductions through YNNPACK fusions by default.
# Training keeps YNN's dots and reductions (without them V1 trains 4x slower) but not
# its convolutions, whose kernel gradient is 7x slower than XLA's own: Table 4's
# full-convolution V1 trains 1.7x faster, separable models alike (the stem is their
# only convolution). Inference is fastest with no YNN fusion at all. Measured per jit
# (benchmarks/xla_options_profile.py, RESULTS.md).
_YNN = "xla_cpu_experimental_ynn_fusion_type"
_CPU_OPTIONS = {
    "train": {_YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                    "LIBRARY_FUSION_TYPE_REDUCE"},
    "inference": {_YNN: ""},
}


def default_cache_dir() -> str:
  """Where the compilation cache lives unless configured otherwise.

  One subdirectory per CPU model: XLA:CPU compiles for the host's instruction set,
  and a home directory shared between different machines must not mix them.
  """
  root = (os.environ.get("XDG_CACHE_HOME")
          or os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(root, "mobilenet_jax", "jax", cpu_fingerprint())


def cpu_fingerprint() -> str:
  """A short hash of the CPU's model and feature flags (the machine name elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features"))]
    text = "".join(sorted(set(lines)))
  except OSError:
    import platform  # pylint: disable=g-import-not-at-top
    text = f"{platform.machine()} {platform.processor()}"
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir_from_env() -> str | None:
  """The cache directory the environment asks for, or None when it is off."""
  value = os.environ.get(CACHE_ENV)
  if value is None:
    return default_cache_dir()
  return None if value.strip().lower() in _OFF else os.path.expanduser(value)


def compiled_code_dir() -> str:
  """Where compiled code is kept (also the C++ kernels): the cache's directory."""
  return cache_dir_from_env() or default_cache_dir()


def enable_compilation_cache(directory: str | None) -> str | None:
  """Points JAX's persistent compilation cache at `directory` (None: leaves it off).

  Returns the directory in use. A `JAX_COMPILATION_CACHE_DIR` already set wins.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  if directory is None:
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:  # A read-only home only costs the cache.
    logging.warning("Compilation cache off: cannot create %s (%s).", directory, error)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECS)
  return directory


@contextlib.contextmanager
def scratch_compilation_cache() -> Iterator[str]:
  """A fresh, empty persistent cache while inside (to time cold and cached compiles).

  Caches every compile, whatever its duration; the previous settings come back after.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  previous = {key: getattr(jax.config, key) for key in keys}
  with tempfile.TemporaryDirectory(prefix="mobilenet_jax_cache_") as directory:
    jax.config.update(keys[0], directory)
    jax.config.update(keys[1], 0.0)
    compilation_cache.reset_cache()
    try:
      yield directory
    finally:
      for key, value in previous.items():
        jax.config.update(key, value)
      compilation_cache.reset_cache()


def _is_this_cli(cli_module: str) -> bool:
  """Whether the running program is `python -m cli_module` (or a console script)."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is not None:
    return spec.name == cli_module
  return os.path.basename(sys.argv[0]).startswith("mobilenet")


def wants_hugepages() -> bool:
  """Linux with the CPU backend in reach, and no hugetlb tunable chosen yet."""
  if not sys.platform.startswith("linux"):
    return False
  if "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", ""):
    return False
  platforms = os.environ.get("JAX_PLATFORMS", "")
  return not platforms or platforms.split(",")[0].strip() == "cpu"


def reexec_with_hugepages(cli_module: str) -> None:
  """Restarts this command once with glibc's transparent-huge-page malloc tunable."""
  if not (wants_hugepages() and _is_this_cli(cli_module)):
    return
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, HUGETLB_TUNABLE]))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def prepare_process(cli_module: str, hugepages: bool = True) -> str | None:
  """Huge pages (by re-executing) and the compilation cache, for one command-line tool.

  Returns the compilation cache directory in use (None: off).
  """
  if hugepages:
    reexec_with_hugepages(cli_module)
  return enable_compilation_cache(cache_dir_from_env())


def compiler_options(purpose: str, backend: str | None = None) -> dict | None:
  """Per-jit XLA options for a "train" or "inference" jit; None off CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  if (backend or jax.default_backend()) != "cpu":
    return None
  return dict(_CPU_OPTIONS[purpose]) or None
