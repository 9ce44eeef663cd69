"""Antialiased bilinear resize of uint8 images: a C++ TensorFlow op, else TF's own.

`tf.image.resize(..., antialias=True)` costs about twice as much as decoding the JPEG
(with clip, flip and normalization 1.36 ms for a 387x290 crop to 224x224 on one core,
against 0.38 ms for this op, which does those too; benchmarks/RESULTS.md): on
ImageNet-sized photos it was over half of the input pipeline's work. resize_op.cc
computes the same weighted sums with the same weights (equal up to float rounding,
tested). Like the model's C++ kernels (models/cpu_kernels.py) it is built on first
use with the system's compiler against the installed TensorFlow, into the compiled
code cache, keyed by the source, the compiler, TensorFlow and the CPU. Where that
fails, or with MOBILENET_JAX_NO_FFI=1, TensorFlow's resize is used (one warning).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile

from mobilenet_jax.data._tf import tf

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resize_op.cc")
DISABLE_ENV = "MOBILENET_JAX_NO_FFI"  # As models/cpu_kernels.py: no C++ at all.


def _compiler() -> str:
  return os.environ.get("CXX") or "c++"


def _library_path() -> str:
  from mobilenet_jax import runtime  # pylint: disable=g-import-not-at-top
  key = hashlib.sha256()
  with open(_SOURCE, "rb") as f:
    key.update(f.read())
  key.update(f"{_compiler()} {tf.__version__} {runtime.cpu_fingerprint()}".encode())
  return os.path.join(runtime.compiled_code_dir(), "tf_ops",
                      f"resize_op-{key.hexdigest()[:16]}.so")


# Tried in order. TensorFlow's bundled Eigen has AVX512-FP16 code that GCC 12 cannot
# compile (seen on a Sapphire Rapids VM, 2026-12-07); the op needs no float16 vectors.
_CPU_FLAG_SETS = (["-march=native"], ["-march=native", "-mno-avx512fp16"])


def _build(path: str) -> None:
  """Compiles the op into `path` (atomically: parallel builders never clash); raises
  the first attempt's CalledProcessError if every flag set fails."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  first_error = None
  try:
    for cpu_flags in _CPU_FLAG_SETS:
      command = [_compiler(), "-O3", *cpu_flags, "-shared", "-fPIC", "-w", _SOURCE,
                 "-o", tmp, *tf.sysconfig.get_compile_flags(),
                 *tf.sysconfig.get_link_flags()]
      try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
      except subprocess.CalledProcessError as e:
        first_error = first_error or e
        continue
      os.replace(tmp, path)
      return
    raise first_error
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _first_error_line(compiler_output: str) -> str:
  """The compiler's first `error:` line (the one that says why), else its last line."""
  lines = [l.strip() for l in compiler_output.splitlines() if l.strip()]
  errors = [l for l in lines if "error:" in l]
  return (errors or lines or ["no output"])[0][:300]


@functools.cache
def _op():
  """The loaded op, or None (after one warning) where it cannot be built."""
  if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
    return None
  if shutil.which(_compiler()) is None:
    logging.warning("No C++ compiler (%s): images are resized with TensorFlow's "
                    "slower resize.", _compiler())
    return None
  try:
    path = _library_path()
    if not os.path.exists(path):
      _build(path)
    return tf.load_op_library(path).mobilenet_antialias_resize
  except (OSError, subprocess.SubprocessError, tf.errors.OpError, AttributeError) as e:
    detail = _first_error_line(getattr(e, "stderr", "") or str(e))
    logging.warning("Building the C++ resize op failed; using TensorFlow's slower "
                    "resize: %s", detail)
    return None


def available() -> bool:
  """Whether the C++ op is in use (builds it on the first call)."""
  return _op() is not None


def resize_antialiased(image: tf.Tensor, size, flip=False, divisor: float = 1.0,
                       offset: float = 0.0) -> tf.Tensor:
  """float32 [h, w, C]: tf.image.resize(image, size, "bilinear", antialias=True),
  clipped to [0, 255], divided by `divisor` plus `offset`, mirrored left-right if
  `flip`.

  `image`: [H, W, C], uint8 for the fast op (other dtypes take TF's ops); `size`:
  [h, w]; `flip`: a bool or a scalar bool tensor.
  """
  op = _op()
  flip = tf.convert_to_tensor(flip, tf.bool)
  if op is None or image.dtype != tf.uint8:
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    resized = tf.clip_by_value(resized, 0.0, 255.0) / divisor + offset
    return tf.cond(flip, lambda: tf.reverse(resized, [1]), lambda: resized)
  return op(image, tf.cast(size, tf.int32), flip, divisor=divisor, offset=offset)
