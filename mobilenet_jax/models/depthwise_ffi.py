"""The depthwise convolution as a C++ XLA:CPU kernel (depthwise_cpu.cc) via `jax.ffi`.

XLA:CPU has no fast depthwise kernel: its grouped convolution is slow, and the fused
shifted multiply-adds of `shift_vjp` still pay for XLA materializing slices in the
backward. The C++ kernel does forward and backward in one pass over NHWC each, with
the intra-op thread pool.

Nothing is compiled at install: on first use the source is built with the system's
C++ compiler (`$CXX`, else `c++`) into the user's cache directory, keyed by the
source, the compiler, jaxlib and the CPU, and loaded from there afterwards. Where no
compiler works, `available()` is False and `depthwise_impl="auto"` keeps `shift_vjp`
(one warning says why). float32 only; other dtypes take `shift_vjp`.
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

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "depthwise_cpu.cc")
_FORWARD, _BACKWARD = "mobilenet_depthwise_forward", "mobilenet_depthwise_backward"
DISABLE_ENV = "MOBILENET_JAX_NO_FFI"  # =1: never build or use the C++ kernel.


def _library_path() -> str:
  """Where the built library lives: one file per source, compiler, jaxlib and CPU."""
  from mobilenet_jax import runtime  # pylint: disable=g-import-not-at-top
  with open(_SOURCE, "rb") as f:
    key = hashlib.sha256(f.read())
  key.update(f"{_compiler()} {jax.__version__} {runtime.cpu_fingerprint()}".encode())
  return os.path.join(runtime.compiled_code_dir(), "ffi",
                      f"depthwise_cpu-{key.hexdigest()[:16]}.so")


def _compiler() -> str:
  return os.environ.get("CXX") or "c++"


def _build(path: str) -> None:
  """Compiles the kernel into `path` (atomically: parallel builders never clash)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  command = [_compiler(), "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
             "-fno-math-errno", f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
  try:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@functools.cache
def available() -> bool:
  """Builds (once per machine) and registers the kernel; False where that fails."""
  if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
    return False
  if shutil.which(_compiler()) is None:
    logging.warning("No C++ compiler (%s): the depthwise convolution uses shift_vjp.",
                    _compiler())
    return False
  try:
    path = _library_path()
    if not os.path.exists(path):
      _build(path)
    library = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(
        _FORWARD, jax.ffi.pycapsule(library.MobilenetDepthwiseForward), platform="cpu")
    jax.ffi.register_ffi_target(
        _BACKWARD, jax.ffi.pycapsule(library.MobilenetDepthwiseBackward), platform="cpu")
  except (OSError, subprocess.SubprocessError, AttributeError) as error:
    detail = getattr(error, "stderr", "") or error
    logging.warning("Building the C++ depthwise kernel failed; using shift_vjp: %s",
                    str(detail)[-2000:])
    return False
  return True


def _same_padding(size: int, k: int, stride: int) -> int:
  """The leading pad of TF "SAME" (the extra pixel goes last)."""
  out = -(-size // stride)
  return max((out - 1) * stride + k - size, 0) // 2


def _attributes(x_shape, k: int, strides: int) -> dict:
  return dict(stride=strides, pad_top=_same_padding(x_shape[1], k, strides),
              pad_left=_same_padding(x_shape[2], k, strides))


def _forward(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  n, h, w, c = x.shape
  out = jax.ShapeDtypeStruct((n, -(-h // strides), -(-w // strides), c), jnp.float32)
  return jax.ffi.ffi_call(_FORWARD, out, vmap_method="sequential")(
      x, kernel, **_attributes(x.shape, kernel.shape[0], strides))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """A (k, k, 1, C) float32 depthwise kernel on NHWC float32 `x`, TF "SAME" padding.

  Reverse mode only (custom_vjp), like `shift_vjp`.
  """
  return _forward(x, kernel, strides)


def _fwd(x, kernel, strides):
  return _forward(x, kernel, strides), (x, kernel)


def _bwd(strides, residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  outputs = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
             jax.ShapeDtypeStruct((x.shape[0], k, k, 1, x.shape[3]), jnp.float32))
  dx, dk_per_image = jax.ffi.ffi_call(_BACKWARD, outputs, vmap_method="sequential")(
      x, kernel, g.astype(jnp.float32), **_attributes(x.shape, k, strides))
  return dx, jnp.sum(dk_per_image, axis=0)


depthwise_conv.defvjp(_fwd, _bwd)
