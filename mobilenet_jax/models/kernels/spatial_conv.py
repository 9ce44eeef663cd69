"""The formulations of the full (non-depthwise) 3x3 convolution, by name
(`SPATIAL_CONV_IMPLS`), and the product over patches that "patches" runs.

XLA:CPU's convolution backward is pathologically slow where outputs are tiny and
channels many: at batch 128, the gradient of a 3x3 512->512 convolution on 2x2
outputs took 2.1 s against 0.04 s as one matrix product over 3x3 patches, and a
stride-2 256->512 one 0.27 s against 0.02 s (issue 18's Table 4 proxy: full-convolution
MobileNets trained at 2 images/s on this CPU). Larger outputs at stride 1 are as fast
or faster with XLA's own convolution (8x8, 128->128: 0.05 s against 0.07 s), so
"patches" keeps it there. Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation
from mobilenet_jax.models.kernels.padding import pad_same

# "xla": XLA's convolution everywhere (nn.Conv); "patches": a product over 3x3 patches
# where XLA:CPU's convolution is slow (`use_patches`), XLA's elsewhere.
SPATIAL_CONV_IMPLS = ("xla", "patches")


def resolve_spatial_conv_impl(name: str, backend: str | None = None) -> str:
  """Maps "auto" to "patches" on CPU and "xla" elsewhere (GPU/TPU not measured
  otherwise); checks the name."""
  return validation.resolve_backend_choice("model.spatial_conv_impl", name,
                                           SPATIAL_CONV_IMPLS, "patches", "xla", backend)


def use_patches(input_size: int, in_channels: int, strides: int) -> bool:
  """Whether "patches" computes this convolution as a product over patches: stride 2
  past the 3-channel stem, or outputs of at most 2x2 (the measured slow cases)."""
  output_size = -(-input_size // strides)
  return (strides == 2 and in_channels >= 32) or output_size <= 2


def conv_by_patches(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """x [N, H, W, C_in] convolved with kernel [k, k, C_in, C_out], TF "SAME" padding,
  as one matrix product: the k*k shifted (strided) views of x side by side
  [N*H'*W', k*k*C_in] times the kernel flattened in the same (row, column, channel)
  order. Autodiff gives the backward (slices, pads and two products)."""
  n, h, w, c = x.shape
  k = kernel.shape[0]
  padded = pad_same(x, k, strides)
  out_h, out_w = -(-h // strides), -(-w // strides)
  views = [padded[:, i:i + strides * (out_h - 1) + 1:strides,
                  j:j + strides * (out_w - 1) + 1:strides, :]
           for i in range(k) for j in range(k)]
  patches = jnp.concatenate(views, axis=-1).reshape(n * out_h * out_w, k * k * c)
  out = patches @ kernel.reshape(k * k * c, -1)
  return out.reshape(n, out_h, out_w, -1)
