"""The depthwise 3x3 convolution, as one small module with swappable implementations.

Every MobileNet block runs one depthwise convolution, and how fast it is depends on the
backend: XLA's grouped convolution (`feature_group_count=C`) is fast on GPU and TPU but
slow on CPU. The networks only use `DepthwiseConv`; which formulation computes it is a
config choice (`config.model.depthwise_impl`), and every formulation is tested equal to
the grouped convolution. The kernel is stored as (k, k, 1, C) whatever the
implementation, so checkpoints move freely between them.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.errors import ConfigError


def _grouped_conv(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """Depthwise conv as XLA's grouped convolution (the reference formulation)."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(strides, strides), padding="SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
  """TF "SAME" padding for one spatial dimension: the extra pixel goes last."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def _shifted_multiply_add(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """Depthwise conv as k*k shifted, strided slices multiplied by per-channel taps.

  Elementwise work that XLA fuses into one loop; on CPU it beats the grouped
  convolution several times over.
  """
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  pad_h, pad_w = _same_padding(h, k, strides), _same_padding(w, k, strides)
  x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  out_h, out_w = -(-h // strides), -(-w // strides)
  taps = kernel[:, :, 0, :]
  out = None
  for i in range(k):
    for j in range(k):
      window = jax.lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (out_h - 1) * strides + 1, j + (out_w - 1) * strides + 1,
           x.shape[3]),
          (1, strides, strides, 1))
      term = window * taps[i, j]
      out = term if out is None else out + term
  return out


IMPLEMENTATIONS: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "xla": _grouped_conv,
    "shift": _shifted_multiply_add,
}


def resolve_impl(name: str, backend: str | None = None) -> str:
  """Maps "auto" to the fastest implementation for the backend; checks the name."""
  if name == "auto":
    backend = backend or jax.default_backend()
    return "shift" if backend == "cpu" else "xla"
  if name not in IMPLEMENTATIONS:
    raise ConfigError(
        f"model.depthwise_impl={name!r} is unknown; allowed: "
        f"{', '.join(['auto', *IMPLEMENTATIONS])}.")
  return name


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: int = 1,
                   impl: str = "auto") -> jax.Array:
  """Applies a (k, k, 1, C) depthwise kernel to NHWC `x` with TF "SAME" padding."""
  return IMPLEMENTATIONS[resolve_impl(impl)](x, kernel, strides)


class DepthwiseConv(nn.Module):
  """A depthwise convolution with no bias (BatchNorm follows it in every block)."""

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
