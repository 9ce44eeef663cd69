"""TF "SAME" padding, shared by every formulation that pads by hand (the depthwise
ones, their C++ kernel's attributes, the full 3x3 convolution over patches)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
  """TF "SAME" padding (before, after) of one spatial dimension: the extra pixel goes
  last."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def pad_same(x: jax.Array, k: int, strides: int) -> jax.Array:
  """Pads NHWC `x` as TF "SAME" does for a k x k window at `strides`."""
  _, h, w, _ = x.shape
  return jnp.pad(x, ((0, 0), same_padding(h, k, strides), same_padding(w, k, strides),
                     (0, 0)))
