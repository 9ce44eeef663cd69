"""Building blocks shared by MobileNet V1 and V2.

Conventions of the reference implementations (TF-slim, Keras; reference facts, section
1): TF "SAME" padding, no bias before BatchNorm, BatchNorm epsilon 1e-3, truncated-normal
initialization with stddev 0.09, parameters in float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation
from mobilenet_jax.models.depthwise import DepthwiseConv

# TF-slim's MobileNet initializer.
KERNEL_INIT = nn.initializers.truncated_normal(0.09)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu6": jax.nn.relu6,
    "relu": jax.nn.relu,
}


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance over all axes but the first and last, kept as 1s."""
  axes = tuple(range(1, x.ndim - 1))
  mean = x.mean(axes, keepdims=True)
  return mean, jnp.square(x - mean).mean(axes, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def normalize_by_batch(x: jax.Array, epsilon: float):
  """((x - mean) / sqrt(var + epsilon), mean, var), statistics per group and channel.

  `x` is float32 [groups, ...pixels..., C]. The hand-written backward is the textbook
  BatchNorm gradient: two reductions and one elementwise pass over x, where autodiff
  of the two-pass variance makes several more full-size passes (XLA:CPU spends about
  a quarter of a MobileNet train step on BatchNorm). Tested equal to autodiff.
  """
  mean, var = _moments(x)
  return (x - mean) * jax.lax.rsqrt(var + epsilon), mean, var


def _normalize_fwd(x, epsilon):
  mean, var = _moments(x)
  inv = jax.lax.rsqrt(var + epsilon)
  return ((x - mean) * inv, mean, var), (x, mean, inv)


def _normalize_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv = residuals
  g_y, g_mean, g_var = cotangents
  axes = tuple(range(1, x.ndim - 1))
  count = math.prod(x.shape[1:-1])
  centered = x - mean
  y = centered * inv
  g_y_mean = g_y.mean(axes, keepdims=True)
  g_y_y_mean = (g_y * y).mean(axes, keepdims=True)
  # d/dx of y, and of the mean and variance outputs (used by the running averages,
  # which a loss may also read).
  dx = (inv * (g_y - g_y_mean - y * g_y_y_mean) + g_mean / count
        + g_var * (2.0 / count) * centered)
  return (dx,)


normalize_by_batch.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """BatchNorm whose statistics come from the whole batch or from groups of it.

  `group_size=0` normalizes over the whole (global, when sharded) batch. A positive
  `group_size` normalizes each consecutive group of that many examples by its own
  statistics, as the per-core BatchNorm of the reference TPU training did; the running
  averages then track the mean of the group statistics. Statistics are computed in
  float32 whatever the compute dtype. `frozen` normalizes with the running statistics
  (and leaves them alone) in training too, as Keras' transfer recipe runs a frozen
  base model with `training=False`.
  """

  momentum: float = 0.99
  epsilon: float = 1e-3
  group_size: int = 0
  dtype: Any = jnp.float32
  frozen: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,),
                                 jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)

    if use_running_average or self.frozen:
      mean, var = running_mean.value, running_var.value
      y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
    else:
      batch = x.shape[0]
      group = self.group_size or batch
      if batch % group:
        raise ValueError(
            f"BatchNorm group size {group} does not divide the batch of {batch}.")
      grouped = x.astype(jnp.float32).reshape((batch // group, group) + x.shape[1:])
      y, mean, var = normalize_by_batch(grouped, self.epsilon)
      y = y.reshape(x.shape)
      if not self.is_initializing():
        batch_mean = mean.reshape(-1, channels).mean(0)
        batch_var = var.reshape(-1, channels).mean(0)
        running_mean.value = (self.momentum * running_mean.value
                              + (1 - self.momentum) * batch_mean)
        running_var.value = (self.momentum * running_var.value
                             + (1 - self.momentum) * batch_var)
    return (y * scale + bias).astype(self.dtype)


# How a 1x1 convolution is computed (`config.model.pointwise_impl`): "xla" is XLA's
# convolution (nn.Conv), "dot" one matrix product over the flattened pixels, which
# XLA:CPU hands to its fast GEMM while its 1x1 convolution path is 2-3x slower.
POINTWISE_IMPLS = ("xla", "dot")


def resolve_pointwise_impl(name: str, backend: str | None = None) -> str:
  """Maps "auto" to the fastest 1x1 formulation for the backend; checks the name.

  GPU and TPU keep XLA's convolution (not measured otherwise; their convolution
  emitters already treat 1x1 as a GEMM).
  """
  return validation.resolve_backend_choice("model.pointwise_impl", name, POINTWISE_IMPLS,
                                           "dot", "xla", backend)


# Images per step of the kernel-gradient scan (as in depthwise.py): XLA:CPU computes
# x^T g over the whole batch by first writing g transposed, a strided pass as slow as
# the product; a few images' worth stays in cache. fwd+bwd of a 1x1 + BatchNorm +
# ReLU6 block at [32,64,64,32]->64: 1.4 s -> 0.8 s (load 12), no change at 8x8x512.
_POINTWISE_SCAN_IMAGES = 4


def _contract(a: jax.Array, b: jax.Array, axis: int) -> jax.Array:
  """dot_general of `a` and `b` over one axis of each (a's last by default)."""
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (axis,)), ((), ())))


@jax.custom_vjp
def pointwise_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [N, ..., C_in] times kernel [C_in, C_out]: a 1x1 convolution as a matrix product.

  Hand-written backward: dx = g kernel^T; dkernel accumulated in float32 over chunks
  of images inside a lax.scan (see _POINTWISE_SCAN_IMAGES). Reverse mode only.
  """
  return _contract(x, kernel, 0)


def _pointwise_fwd(x, kernel):
  return _contract(x, kernel, 0), (x, kernel)


def _pointwise_bwd(residuals, g):
  x, kernel = residuals
  dx = _contract(g, kernel, 1).astype(x.dtype)
  n = x.shape[0]
  chunk = next(d for d in (_POINTWISE_SCAN_IMAGES, 2, 1) if n % d == 0)
  xs = x.reshape(n // chunk, -1, x.shape[-1])
  gs = g.reshape(n // chunk, -1, g.shape[-1])

  def step(total, chunk_xg):
    x_c, g_c = chunk_xg
    return total + jax.lax.dot_general(
        x_c, g_c, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32), None

  dk, _ = jax.lax.scan(step, jnp.zeros(kernel.shape, jnp.float32), (xs, gs))
  return dx, dk.astype(kernel.dtype)


pointwise_dot.defvjp(_pointwise_fwd, _pointwise_bwd)


class PointwiseConv(nn.Module):
  """A 1x1 convolution without bias computed as one matrix product.

  The kernel keeps nn.Conv's (1, 1, C_in, C_out) shape and name, so checkpoints and
  the cost counter see the same parameter whichever implementation runs.
  """

  features: int
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = KERNEL_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    kernel = kernel.reshape(kernel.shape[2:]).astype(self.dtype)
    return pointwise_dot(x.astype(self.dtype), kernel)


class ConvBN(nn.Module):
  """A convolution without bias, BatchNorm, then an optional activation."""

  features: int
  kernel_size: int = 1
  strides: int = 1
  activation: str | None = "relu6"
  norm: Callable[..., nn.Module] = BatchNorm
  dtype: Any = jnp.float32
  pointwise_impl: str = "auto"  # Only used when kernel_size == strides == 1.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if (self.kernel_size == 1 and self.strides == 1
        and resolve_pointwise_impl(self.pointwise_impl) == "dot"):
      x = PointwiseConv(self.features, self.dtype, name="conv")(x)
    else:
      x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                  strides=self.strides, padding="SAME", use_bias=False,
                  kernel_init=KERNEL_INIT, dtype=self.dtype, param_dtype=jnp.float32,
                  name="conv")(x)
    x = self.norm(dtype=self.dtype, name="bn")(x, use_running_average=not train)
    return ACTIVATIONS[self.activation](x) if self.activation else x


class DepthwiseBN(nn.Module):
  """A 3x3 depthwise convolution, BatchNorm and the activation."""

  strides: int = 1
  activation: str = "relu6"
  depthwise_impl: str = "auto"
  norm: Callable[..., nn.Module] = BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = DepthwiseConv(3, self.strides, impl=self.depthwise_impl, dtype=self.dtype,
                      kernel_init=KERNEL_INIT, name="depthwise")(x)
    x = self.norm(dtype=self.dtype, name="bn")(x, use_running_average=not train)
    return ACTIVATIONS[self.activation](x)


class DepthwiseSeparable(nn.Module):
  """MobileNet V1's block: 3x3 depthwise then 1x1 pointwise, each with BN and act."""

  features: int
  strides: int = 1
  activation: str = "relu6"
  depthwise_impl: str = "auto"
  norm: Callable[..., nn.Module] = BatchNorm
  dtype: Any = jnp.float32
  pointwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = DepthwiseBN(self.strides, self.activation, self.depthwise_impl, self.norm,
                    self.dtype, name="dw")(x, train)
    return ConvBN(self.features, 1, 1, self.activation, self.norm, self.dtype,
                  pointwise_impl=self.pointwise_impl, name="pw")(x, train)


class InvertedResidual(nn.Module):
  """MobileNet V2's bottleneck: 1x1 expand, 3x3 depthwise, linear 1x1 projection.

  No expansion conv when `expansion == 1`; a residual connection only when the stride
  is 1 and the input and output channel counts are equal (V2 paper, section 3.3).
  """

  features: int
  strides: int = 1
  expansion: int = 6
  depthwise_impl: str = "auto"
  norm: Callable[..., nn.Module] = BatchNorm
  dtype: Any = jnp.float32
  pointwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    in_channels = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = ConvBN(in_channels * self.expansion, 1, 1, "relu6", self.norm, self.dtype,
                 pointwise_impl=self.pointwise_impl, name="expand")(y, train)
    y = DepthwiseBN(self.strides, "relu6", self.depthwise_impl, self.norm, self.dtype,
                    name="dw")(y, train)
    y = ConvBN(self.features, 1, 1, None, self.norm, self.dtype,
               pointwise_impl=self.pointwise_impl, name="project")(y, train)
    if self.strides == 1 and in_channels == self.features:
      y = y + x
    return y


def norm_factory(momentum: float, epsilon: float, group_size: int,
                 frozen: bool = False) -> Callable[..., nn.Module]:
  """A BatchNorm constructor with the config's momentum, epsilon and grouping."""
  return functools.partial(BatchNorm, momentum=momentum, epsilon=epsilon,
                           group_size=group_size, frozen=frozen)
