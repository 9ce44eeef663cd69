"""Train-mode BatchNorm with its affine and activation as one function with one VJP.

The Flax layer that owns the parameters and the running averages is
`models.layers.BatchNorm`; this module is what it computes in training.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from mobilenet_jax.models.kernels import batchnorm_ffi, cpu_kernels

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu6": jax.nn.relu6,
    "relu": jax.nn.relu,
}

# d activation / d input as a 0/1 mask of the pre-activation (jax.nn's convention: the
# gradient is 0 at the kinks).
_ACTIVATION_MASKS: dict[str | None, Callable[[jax.Array], jax.Array]] = {
    "relu6": lambda a: (a > 0) & (a < 6),
    "relu": lambda a: a > 0,
    None: lambda a: jnp.ones_like(a, bool),
}


def activate(a: jax.Array, activation: str | None) -> jax.Array:
  """`a` through the named activation; unchanged for None."""
  return ACTIVATIONS[activation](a) if activation else a


def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance over all axes but the first and last, kept as 1s."""
  axes = tuple(range(1, x.ndim - 1))
  mean = x.mean(axes, keepdims=True)
  return mean, jnp.square(x - mean).mean(axes, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     activation: str | None):
  """activation((x - mean) / sqrt(var + epsilon) * scale + bias), and mean and var.

  `x` is [groups, ...pixels..., C] in any float dtype; statistics are float32, per
  group and channel; the output has x's dtype. One hand-written VJP covers the
  normalization, the affine and the activation: autodiff of the three as separate
  functions computes the two reductions over the incoming gradient twice (once for
  the scale gradient, once for BatchNorm's) and writes the normalized input as an extra
  full-size array, while here the backward is two reductions and one elementwise pass
  over x (BatchNorm was a large share of XLA:CPU's MobileNet train step). On one CPU
  device, in float32, the reductions are C++ kernels (batchnorm_ffi.py) that read
  their inputs once: XLA:CPU's reductions wrote x - mean, the masked gradient and the
  normalized input as full arrays first (figures: benchmarks/RESULTS.md). Tested
  equal to autodiff, with and without the kernels.
  """
  out, mean, var, _ = _forward(x, scale, bias, epsilon, activation)
  return out, mean, var


def _forward(x, scale, bias, epsilon, activation):
  x32 = x.astype(jnp.float32)
  mean, var = batchnorm_ffi.moments(x) if cpu_kernels.applies(x) else moments(x32)
  inv = jax.lax.rsqrt(var + epsilon)
  out = activate((x32 - mean) * (inv * scale) + bias, activation).astype(x.dtype)
  return out, mean, var, inv


def _fwd(x, scale, bias, epsilon, activation):
  out, mean, var, inv = _forward(x, scale, bias, epsilon, activation)
  return (out, mean, var), (x, mean, inv, scale, bias)


def _bwd(epsilon, activation, residuals, cotangents):
  del epsilon
  x, mean, inv, scale, bias = residuals
  g_out, g_mean, g_var = cotangents
  axes = tuple(range(1, x.ndim - 1))
  count = math.prod(x.shape[1:-1])
  centered = x.astype(jnp.float32) - mean
  normalized = centered * inv
  mask = _ACTIVATION_MASKS[activation](normalized * scale + bias)
  g = jnp.where(mask, g_out.astype(jnp.float32), 0.0)  # d loss / d pre-activation
  if cpu_kernels.applies(x, g_out):  # Per group: d bias, d scale.
    g_sum, g_normalized_sum = batchnorm_ffi.gradient_sums(g_out, x, mean, inv, scale,
                                                          bias, activation)
  else:
    g_sum = g.sum(axes, keepdims=True)
    g_normalized_sum = (g * normalized).sum(axes, keepdims=True)
  # d/dx of the output, and of the mean and variance outputs (read by the running
  # averages, which a loss may also read).
  dx = (scale * inv * (g - (g_sum + normalized * g_normalized_sum) / count)
        + g_mean / count + g_var * (2.0 / count) * centered)
  channel_total = lambda a: a.reshape(-1, a.shape[-1]).sum(0)
  return (dx.astype(x.dtype), channel_total(g_normalized_sum).astype(scale.dtype),
          channel_total(g_sum).astype(bias.dtype))


batch_norm_train.defvjp(_fwd, _bwd)


def batch_norm_inference(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array,
                         bias: jax.Array, epsilon: float,
                         activation: str | None) -> jax.Array:
  """activation((x - mean) / sqrt(var + epsilon) * scale + bias) with given statistics,
  in float32 (autodiff: it is elementwise)."""
  y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + epsilon)
  return activate(y * scale + bias, activation)
