"""TensorFlow for the input pipeline only: it must never take the accelerators.

JAX owns the GPUs/TPUs. TensorFlow would otherwise reserve all GPU memory on its first
op, so every data module imports `tf` from here, which hides accelerators from it.
"""

import tensorflow as tf

for _kind in ("GPU", "TPU"):
  try:
    tf.config.set_visible_devices([], _kind)
  except (RuntimeError, ValueError):
    # RuntimeError: devices were already initialized (then TF was set up earlier,
    # e.g. by the caller); ValueError: no such device kind in this build.
    pass

__all__ = ["tf"]
