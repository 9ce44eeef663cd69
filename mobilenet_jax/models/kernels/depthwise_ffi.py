"""The depthwise convolution as a C++ XLA:CPU kernel (depthwise_cpu.cc) via `jax.ffi`.

XLA:CPU has no fast depthwise kernel: its grouped convolution is slow, and the fused
shifted multiply-adds of `shift_vjp` still pay for XLA materializing slices in the
backward. The C++ kernel does forward and backward in one pass over NHWC each, with
the intra-op thread pool. cpu_kernels.py builds and registers it; float32 only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mobilenet_jax.models.kernels.padding import same_padding

_FORWARD, _BACKWARD = "mobilenet_depthwise_forward", "mobilenet_depthwise_backward"


def _attributes(x_shape, k: int, strides: int) -> dict:
  return dict(stride=strides, pad_top=same_padding(x_shape[1], k, strides)[0],
              pad_left=same_padding(x_shape[2], k, strides)[0])


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
