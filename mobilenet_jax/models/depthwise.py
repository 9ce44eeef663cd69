"""The depthwise convolution layer; how it is computed is kernels/depthwise.py's choice.

`IMPLEMENTATIONS`, `resolve_impl` and `depthwise_conv` are the kernels' registry,
importable here for the modules that check or report the choice.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.models.kernels.depthwise import (IMPLEMENTATIONS, depthwise_conv,
                                                    resolve_impl)

__all__ = ["DepthwiseConv", "IMPLEMENTATIONS", "depthwise_conv", "resolve_impl"]


class DepthwiseConv(nn.Module):
  """A depthwise convolution with no bias (BatchNorm follows it in every block).

  The kernel is stored as (k, k, 1, C) whatever `impl` computes it, so checkpoints
  move freely between the implementations.
  """

  kernel_size: int = 3
  strides: int = 1
  impl: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = nn.initializers.truncated_normal(0.09)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, channels), jnp.float32)
    return depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                          self.impl)
