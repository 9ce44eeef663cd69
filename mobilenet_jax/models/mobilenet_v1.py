"""MobileNet V1 (Howard et al. 2017, Table 1) with the paper's ablation variants.

- `width`: the width multiplier alpha; every channel count c becomes
  max(int(c * alpha), 8), as in TF-slim.
- `depth="shallow"`: Table 5's shallow MobileNet, without the five 14x14x512 pairs.
- `block="full_conv"`: Table 4's "Conv MobileNet", each depthwise separable pair
  replaced by one full 3x3 convolution with the same channels and stride.
The last depthwise layer has stride 1 (the paper prints 2, but its input and output
are both 7x7 and every reference implementation uses 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation
from mobilenet_jax.models.layers import (ACTIVATIONS, KERNEL_INIT, ConvBN,
                                         DepthwiseSeparable, Ops)

DEPTHS = ("full", "shallow")
BLOCKS = ("separable", "full_conv")

# (stride, output channels) of the 13 separable pairs of Table 1.
FULL_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
               (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
               (2, 1024), (1, 1024))
# Table 5 removes the five 14x14x512 pairs (indices 6 to 10).
SHALLOW_BLOCKS = FULL_BLOCKS[:6] + FULL_BLOCKS[11:]


def scaled_channels(channels: int, width: float) -> int:
  """TF-slim's width rule for V1: max(int(c * alpha), 8)."""
  return max(int(channels * width), 8)


class MobileNetV1(nn.Module):
  """MobileNet V1; `__call__(images, train)` returns float32 logits."""

  num_classes: int = 1000
  width: float = 1.0
  depth: str = "full"
  block: str = "separable"
  activation: str = "relu6"
  dropout_rate: float = 0.001
  ops: Ops = Ops()

  def __post_init__(self):
    validation.check_width(self.width)
    validation.check_choice("model.depth", self.depth, DEPTHS)
    validation.check_choice("model.block", self.block, BLOCKS)
    validation.check_choice("model.activation", self.activation, ACTIVATIONS)
    validation.check_num_classes(self.num_classes)
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    validation.check_resolution(images.shape[1], images.shape[2])
    x = images.astype(self.ops.dtype)
    x = ConvBN(scaled_channels(32, self.width), 3, 2, self.activation, self.ops,
               name="conv0")(x, train)
    blocks = FULL_BLOCKS if self.depth == "full" else SHALLOW_BLOCKS
    for index, (strides, channels) in enumerate(blocks, start=1):
      features = scaled_channels(channels, self.width)
      if self.block == "separable":
        x = DepthwiseSeparable(features, strides, self.activation, self.ops,
                               name=f"block{index}")(x, train)
      else:
        x = ConvBN(features, 3, strides, self.activation, self.ops,
                   name=f"block{index}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, kernel_init=KERNEL_INIT, dtype=self.ops.dtype,
                      param_dtype=jnp.float32, name="classifier")(x)
    return logits.astype(jnp.float32)
