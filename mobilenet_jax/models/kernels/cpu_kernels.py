"""The project's C++ XLA:CPU kernels: built on first use, loaded, registered for `jax.ffi`.

XLA:CPU has no fast depthwise convolution, and its reductions cannot fuse the
elementwise work in front of them; depthwise_cpu.cc and batchnorm_cpu.cc fill those
gaps (their Python sides: depthwise_ffi.py, batchnorm_ffi.py).

Nothing is compiled at install: on first use the sources are built with the system's
C++ compiler (`$CXX`, else `c++`) into one library in the user's cache directory,
keyed by the sources, the compiler, jaxlib and the CPU, and loaded from there
afterwards; a cached library that is damaged (its checksum differs) or does not load
is rebuilt. Where no compiler works, `available()` is False and every caller keeps
its pure-JAX path (one warning says why).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ("depthwise_cpu.cc", "batchnorm_cpu.cc")
_HEADERS = ("parallel_for.h",)
DISABLE_ENV = "MOBILENET_JAX_NO_FFI"  # =1: never build or use the C++ kernels.

# ffi target name -> the symbol XLA_FFI_DEFINE_HANDLER_SYMBOL exports.
TARGETS = {
    "mobilenet_depthwise_forward": "MobilenetDepthwiseForward",
    "mobilenet_depthwise_backward": "MobilenetDepthwiseBackward",
    "mobilenet_batch_norm_moments": "MobilenetBatchNormMoments",
    "mobilenet_batch_norm_gradient_sums": "MobilenetBatchNormGradientSums",
}


def _compiler() -> str:
  return os.environ.get("CXX") or "c++"


def _library_path() -> str:
  """Where the built library lives: one file per sources, compiler, jaxlib and CPU."""
  from mobilenet_jax import runtime  # pylint: disable=g-import-not-at-top
  key = hashlib.sha256()
  for name in _SOURCES + _HEADERS:
    with open(os.path.join(_HERE, name), "rb") as f:
      key.update(f.read())
  key.update(f"{_compiler()} {jax.__version__} {runtime.cpu_fingerprint()}".encode())
  return os.path.join(runtime.compiled_code_dir(), "ffi",
                      f"mobilenet_cpu-{key.hexdigest()[:16]}.so")


def _open(path: str) -> ctypes.CDLL:
  """Loads the library at `path`; OSError or AttributeError unless it has every kernel."""
  library = ctypes.cdll.LoadLibrary(path)
  for symbol in TARGETS.values():
    getattr(library, symbol)
  return library


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _write_atomically(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _build(path: str) -> ctypes.CDLL:
  """Compiles the kernels, loads them, then renames the library to `path`.

  Built under a temporary name and renamed only once it loads, so a parallel builder
  never sees a half-written file and a broken build never lands in the cache; its
  checksum goes beside it (`path`.sha256). It is loaded from the temporary name: the
  dynamic loader matches libraries by path, so loading `path` after a failed load
  could hand back the broken one.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  command = [_compiler(), "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
             "-fno-math-errno", f"-I{jax.ffi.include_dir()}", f"-I{_HERE}",
             *(os.path.join(_HERE, name) for name in _SOURCES), "-o", tmp]
  try:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    library = _open(tmp)
    _write_atomically(path + ".sha256", _sha256(tmp))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return library


def _damage(path: str) -> str | None:
  """Why the cached library at `path` must not be loaded; None if it is intact.

  A damaged file never reaches the loader: a truncated library crashes the process
  (SIGBUS) instead of failing to load.
  """
  try:
    with open(path + ".sha256") as f:
      expected = f.read().strip()
  except OSError:
    return "have no checksum"
  return None if _sha256(path) == expected else "do not match their checksum"


def _load_or_build(path: str) -> ctypes.CDLL:
  """The cached library, or a new build where it is missing, damaged or does not load.

  A damaged cached file (truncated by a full disk, garbled) is rebuilt once,
  replacing it; otherwise every later run would take the slow path, or crash.
  """
  if os.path.exists(path):
    problem = _damage(path)
    if problem is None:
      try:
        return _open(path)
      except (OSError, AttributeError) as error:
        problem = f"do not load ({error})"
    logging.warning("The cached C++ CPU kernels in %s %s; rebuilding them.", path,
                    problem)
  return _build(path)


@functools.cache
def available() -> bool:
  """Builds (once per machine) and registers the kernels; False where that fails."""
  if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
    return False
  if shutil.which(_compiler()) is None:
    logging.warning("No C++ compiler (%s): the CPU kernels fall back to pure JAX.",
                    _compiler())
    return False
  try:
    library = _load_or_build(_library_path())
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
  except (OSError, subprocess.SubprocessError, AttributeError) as error:
    detail = getattr(error, "stderr", "") or error
    logging.warning("Building the C++ CPU kernels failed; using pure JAX: %s",
                    str(detail)[-2000:])
    return False
  return True


def applies(*arrays: jax.Array) -> bool:
  """Whether a kernel can take these operands: float32, on one CPU device, built.

  One device only: XLA cannot split a custom call over a sharded batch, so on several
  (simulated) CPU devices it would gather the whole batch onto each.
  """
  return (all(a.dtype == jnp.float32 for a in arrays)
          and jax.default_backend() == "cpu" and jax.device_count() == 1
          and available())
