"""TensorFlow for the input pipeline only: it must never take the accelerators.

JAX owns the GPUs/TPUs. TensorFlow would otherwise reserve all GPU memory on its first
op, so every data module imports `tf` from here, which hides accelerators from it.

It is also imported without Keras. TensorFlow's own import loads all of Keras 3 (~2 of
its ~5.4 s on a 2-core CPU, measured 2026-12-07) only to register Keras optimizers for
SavedModels that contain them; this package uses tf.data and exports plain
tf.Modules. Keras stays importable: `tf.keras`, `from tensorflow.keras import ...` and
`import keras` (mobilenet_jax.interop) load it when first used.
"""

import os
import sys

from mobilenet_jax import console

# What TensorFlow puts first on its __path__ for `tensorflow.keras`, in that order
# (tensorflow/__init__.py prepends the second, then the first).
_KERAS_API_MODULES = ("keras.api._v2.keras", "keras._tf_keras.keras")


def _import_without_keras():
  """`import tensorflow`, with Keras kept out of the import (module doc)."""
  if ("tensorflow" in sys.modules or "keras" in sys.modules
      or os.environ.get("TF_USE_LEGACY_KERAS", "") in ("true", "True", "1")):
    import tensorflow  # pylint: disable=g-import-not-at-top
    return tensorflow
  sys.modules["keras"] = None  # Makes `import keras` fail at once; TF catches that.
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top
  finally:
    if "keras" in sys.modules and sys.modules["keras"] is None:
      del sys.modules["keras"]
  # TF could not find Keras's directories for tensorflow.keras: put them back.
  from tensorflow.python.tools import module_util  # pylint: disable=g-import-not-at-top
  found = [module_util.get_parent_dir_for_name(name) for name in _KERAS_API_MODULES]
  tensorflow.__path__ = [entry for entry in found + tensorflow.__path__ if entry]
  return tensorflow


# Quietly, whoever imports it first (a tool, or `mobilenet_jax.preprocess` in a user's
# script): TensorFlow's C++ start-up lines go straight to file descriptor 2.
with console.stderr_silenced():
  tf = _import_without_keras()

for _kind in ("GPU", "TPU"):
  try:
    tf.config.set_visible_devices([], _kind)
  except (RuntimeError, ValueError):
    # RuntimeError: devices were already initialized (then TF was set up earlier,
    # e.g. by the caller); ValueError: no such device kind in this build.
    pass

__all__ = ["tf"]
