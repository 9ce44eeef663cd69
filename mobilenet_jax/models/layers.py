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

from mobilenet_jax.models import batchnorm_ffi, cpu_kernels, validation
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


# d activation / d input as a 0/1 mask of the pre-activation (jax.nn's convention: the
# gradient is 0 at the kinks).
_ACTIVATION_MASKS: dict[str | None, Callable[[jax.Array], jax.Array]] = {
    "relu6": lambda a: (a > 0) & (a < 6),
    "relu": lambda a: a > 0,
    None: lambda a: jnp.ones_like(a, bool),
}


def _activate(a: jax.Array, activation: str | None) -> jax.Array:
  return ACTIVATIONS[activation](a) if activation else a


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
  over x (XLA:CPU spent about a quarter of a MobileNet train step on BatchNorm). On
  one CPU device, in float32, the reductions are C++ kernels (batchnorm_ffi.py) that
  read their inputs once: XLA:CPU's reductions wrote x - mean, the masked gradient
  and the normalized input as full arrays first (train step: V1 1.14x, V2 1.35x).
  Tested equal to autodiff, with and without the kernels.
  """
  out, mean, var, _ = _batch_norm_forward(x, scale, bias, epsilon, activation)
  return out, mean, var


def _batch_norm_forward(x, scale, bias, epsilon, activation):
  x32 = x.astype(jnp.float32)
  mean, var = batchnorm_ffi.moments(x) if cpu_kernels.applies(x) else _moments(x32)
  inv = jax.lax.rsqrt(var + epsilon)
  out = _activate((x32 - mean) * (inv * scale) + bias, activation).astype(x.dtype)
  return out, mean, var, inv


def _batch_norm_fwd(x, scale, bias, epsilon, activation):
  out, mean, var, inv = _batch_norm_forward(x, scale, bias, epsilon, activation)
  return (out, mean, var), (x, mean, inv, scale, bias)


def _batch_norm_bwd(epsilon, activation, residuals, cotangents):
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


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """BatchNorm whose statistics come from the whole batch or from groups of it, then
  the activation (if any) of the layer it ends.

  `group_size=0` normalizes over the whole (global, when sharded) batch. A positive
  `group_size` normalizes each consecutive group of that many examples by its own
  statistics, as the per-core BatchNorm of the reference TPU training did; the running
  averages then track the mean of the group statistics. Statistics are computed in
  float32 whatever the compute dtype. `frozen` normalizes with the running statistics
  (and leaves them alone) in training too, as Keras' transfer recipe runs a frozen
  base model with `training=False`. The activation lives here so that training runs
  normalization, affine and activation as one function with one VJP
  (`batch_norm_train`).
  """

  momentum: float = 0.99
  epsilon: float = 1e-3
  group_size: int = 0
  dtype: Any = jnp.float32
  frozen: bool = False
  activation: str | None = None

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
      return _activate(y * scale + bias, self.activation).astype(self.dtype)
    batch = x.shape[0]
    group = self.group_size or batch
    if batch % group:
      raise ValueError(
          f"BatchNorm group size {group} does not divide the batch of {batch}.")
    grouped = x.reshape((batch // group, group) + x.shape[1:])
    y, mean, var = batch_norm_train(grouped, scale, bias, self.epsilon, self.activation)
    if not self.is_initializing():
      batch_mean = mean.reshape(-1, channels).mean(0)
      batch_var = var.reshape(-1, channels).mean(0)
      running_mean.value = (self.momentum * running_mean.value
                            + (1 - self.momentum) * batch_mean)
      running_var.value = (self.momentum * running_var.value
                           + (1 - self.momentum) * batch_var)
    return y.reshape(x.shape).astype(self.dtype)


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


def _contract(a: jax.Array, b: jax.Array, axis: int) -> jax.Array:
  """dot_general of `a` and `b` over a's last axis and one axis of b."""
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (axis,)), ((), ())))


@jax.custom_vjp
def pointwise_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [N, ..., C_in] times kernel [C_in, C_out]: a 1x1 convolution as a matrix product.

  Hand-written backward: dx = g kernel^T, dkernel = x^T g in float32. Every product
  reads x and g as the same [pixels, C] matrix: XLA:CPU fuses a reshape into the
  elementwise op that produces an array, so a second view of x had the BatchNorm
  before it computed and written twice. (A loop over chunks of images for dkernel
  was faster while XLA:CPU's BatchNorm reductions ran beside it; with the C++ ones,
  one product over all pixels is: V1 train step 4% faster.) Reverse mode only.
  """
  return _pointwise_fwd(x, kernel)[0]


def _pointwise_fwd(x, kernel):
  out = _contract(x.reshape(-1, x.shape[-1]), kernel, 0)
  return out.reshape(x.shape[:-1] + kernel.shape[1:]), (x, kernel)


def _pointwise_bwd(residuals, g):
  x, kernel = residuals
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  dx = _contract(g2, kernel, 1).reshape(x.shape).astype(x.dtype)
  dk = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
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
    return self.norm(dtype=self.dtype, activation=self.activation, name="bn")(
        x, use_running_average=not train)


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
    return self.norm(dtype=self.dtype, activation=self.activation, name="bn")(
        x, use_running_average=not train)


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
