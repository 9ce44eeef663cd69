"""MobileNet V2 (Sandler et al. 2018, Table 2).

Every channel count c becomes make_divisible(c * alpha, 8); the last 1x1 convolution
stays at 1280 channels for alpha <= 1 and is scaled above 1, as in every released
checkpoint (TF-slim's mobilenet_v2.py and Keras' MobileNetV2).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation
from mobilenet_jax.models.layers import KERNEL_INIT, ConvBN, InvertedResidual, Ops

# (expansion t, output channels c, repeats n, first stride s) of Table 2.
BOTTLENECKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAST_CONV_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
  """Rounds to the nearest multiple of `divisor`, never going down by over 10%."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


class MobileNetV2(nn.Module):
  """MobileNet V2; `__call__(images, train)` returns float32 logits."""

  num_classes: int = 1000
  width: float = 1.0
  dropout_rate: float = 0.2
  ops: Ops = Ops()

  def __post_init__(self):
    validation.check_width(self.width)
    validation.check_num_classes(self.num_classes)
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    validation.check_resolution(images.shape[1], images.shape[2])
    x = images.astype(self.ops.dtype)
    x = ConvBN(make_divisible(32 * self.width), 3, 2, "relu6", self.ops,
               name="conv0")(x, train)
    index = 0
    for expansion, channels, repeats, first_stride in BOTTLENECKS:
      features = make_divisible(channels * self.width)
      for repeat in range(repeats):
        index += 1
        x = InvertedResidual(features, first_stride if repeat == 0 else 1, expansion,
                             self.ops, name=f"block{index}")(x, train)
    last_channels = (LAST_CONV_CHANNELS if self.width <= 1.0
                     else make_divisible(LAST_CONV_CHANNELS * self.width))
    x = ConvBN(last_channels, 1, 1, "relu6", self.ops, name="conv_last")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, kernel_init=KERNEL_INIT, dtype=self.ops.dtype,
                      param_dtype=jnp.float32, name="classifier")(x)
    return logits.astype(jnp.float32)
