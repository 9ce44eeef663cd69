"""The layers and blocks of MobileNet V1 and V2, and `Ops`: how all of them compute.

Conventions of the reference implementations (TF-slim's mobilenet_v1.py, Keras'
applications): TF "SAME" padding, no bias before BatchNorm, BatchNorm epsilon 1e-3,
truncated-normal initialization with stddev 0.09, parameters in float32 whatever the
compute dtype.
What the layers compute with (the depthwise and 1x1 formulations, train-mode
BatchNorm, the C++ CPU kernels) lives in `models/kernels/`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.models.depthwise import DepthwiseConv
from mobilenet_jax.models.kernels.batch_norm import (ACTIVATIONS, batch_norm_inference,
                                                     batch_norm_train)
from mobilenet_jax.models.kernels.pointwise import (POINTWISE_IMPLS, pointwise_dot,
                                                    resolve_pointwise_impl)
from mobilenet_jax.models.kernels.spatial_conv import (SPATIAL_CONV_IMPLS, conv_by_patches,
                                                       resolve_spatial_conv_impl,
                                                       use_patches)

# Importable here for the config checks.
__all__ = ["ACTIVATIONS", "POINTWISE_IMPLS", "KERNEL_INIT", "BatchNorm", "PointwiseConv",
           "SPATIAL_CONV_IMPLS", "PatchesConv", "Ops", "ConvBN", "DepthwiseBN", "DepthwiseSeparable", "InvertedResidual",
           "norm_factory"]

# TF-slim's MobileNet initializer.
KERNEL_INIT = nn.initializers.truncated_normal(0.09)


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
  (`kernels.batch_norm.batch_norm_train`).
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
      return batch_norm_inference(x, running_mean.value, running_var.value, scale, bias,
                                  self.epsilon, self.activation).astype(self.dtype)
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


def norm_factory(momentum: float, epsilon: float, group_size: int,
                 frozen: bool = False) -> Callable[..., nn.Module]:
  """A BatchNorm constructor with the config's momentum, epsilon and grouping."""
  return functools.partial(BatchNorm, momentum=momentum, epsilon=epsilon,
                           group_size=group_size, frozen=frozen)


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


class PatchesConv(nn.Module):
  """A 3x3 convolution without bias, TF "SAME" padding, computed as a product over
  patches where XLA:CPU's convolution is slow (`spatial_conv.use_patches`).

  The kernel keeps nn.Conv's (k, k, C_in, C_out) shape and name, as PointwiseConv's.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = KERNEL_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32).astype(self.dtype)
    x = x.astype(self.dtype)
    if use_patches(max(x.shape[1:3]), x.shape[-1], self.strides):
      return conv_by_patches(x, kernel, self.strides)
    return jax.lax.conv_general_dilated(x, kernel, (self.strides,) * 2, "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@dataclasses.dataclass(frozen=True)
class Ops:
  """How every layer of one network computes: built once (`models.create`), shared by
  all its blocks. None of the choices changes the parameter tree.

  `depthwise`, `pointwise` and `spatial_conv` (full 3x3 convolutions) name a
  formulation (`kernels.depthwise.IMPLEMENTATIONS`, `POINTWISE_IMPLS`,
  `SPATIAL_CONV_IMPLS`) or "auto", the backend's fastest; `batch_norm` builds the
  BatchNorm layers (`norm_factory`: momentum, epsilon, grouping, freezing); `dtype` is
  the compute dtype (parameters stay float32).
  """

  depthwise: str = "auto"
  pointwise: str = "auto"
  spatial_conv: str = "auto"
  batch_norm: Callable[..., nn.Module] = BatchNorm
  dtype: Any = jnp.float32

  def conv(self, features: int, kernel_size: int, strides: int, name: str) -> nn.Module:
    """A convolution without bias; a 1x1 at stride 1 is computed as `pointwise` says,
    a 3x3 as `spatial_conv` says."""
    if (kernel_size == 1 and strides == 1
        and resolve_pointwise_impl(self.pointwise) == "dot"):
      return PointwiseConv(features, self.dtype, name=name)
    if kernel_size == 3 and resolve_spatial_conv_impl(self.spatial_conv) == "patches":
      return PatchesConv(features, kernel_size, strides, self.dtype, name=name)
    return nn.Conv(features, (kernel_size, kernel_size), strides=strides, padding="SAME",
                   use_bias=False, kernel_init=KERNEL_INIT, dtype=self.dtype,
                   param_dtype=jnp.float32, name=name)

  def depthwise_conv(self, strides: int, name: str) -> nn.Module:
    """A 3x3 depthwise convolution computed as `depthwise` says."""
    return DepthwiseConv(3, strides, impl=self.depthwise, dtype=self.dtype,
                         kernel_init=KERNEL_INIT, name=name)

  def norm(self, activation: str | None, name: str) -> nn.Module:
    """BatchNorm, then `activation`, in the compute dtype."""
    return self.batch_norm(dtype=self.dtype, activation=activation, name=name)


class ConvBN(nn.Module):
  """A convolution without bias, BatchNorm, then an optional activation."""

  features: int
  kernel_size: int = 1
  strides: int = 1
  activation: str | None = "relu6"
  ops: Ops = Ops()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.ops.conv(self.features, self.kernel_size, self.strides, "conv")(x)
    return self.ops.norm(self.activation, "bn")(x, use_running_average=not train)


class DepthwiseBN(nn.Module):
  """A 3x3 depthwise convolution, BatchNorm and the activation."""

  strides: int = 1
  activation: str = "relu6"
  ops: Ops = Ops()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.ops.depthwise_conv(self.strides, "depthwise")(x)
    return self.ops.norm(self.activation, "bn")(x, use_running_average=not train)


class DepthwiseSeparable(nn.Module):
  """MobileNet V1's block: 3x3 depthwise then 1x1 pointwise, each with BN and act."""

  features: int
  strides: int = 1
  activation: str = "relu6"
  ops: Ops = Ops()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = DepthwiseBN(self.strides, self.activation, self.ops, name="dw")(x, train)
    return ConvBN(self.features, 1, 1, self.activation, self.ops, name="pw")(x, train)


class InvertedResidual(nn.Module):
  """MobileNet V2's bottleneck: 1x1 expand, 3x3 depthwise, linear 1x1 projection.

  No expansion conv when `expansion == 1`; a residual connection only when the stride
  is 1 and the input and output channel counts are equal (V2 paper, section 3.3).
  """

  features: int
  strides: int = 1
  expansion: int = 6
  ops: Ops = Ops()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    in_channels = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = ConvBN(in_channels * self.expansion, 1, 1, "relu6", self.ops,
                 name="expand")(y, train)
    y = DepthwiseBN(self.strides, "relu6", self.ops, name="dw")(y, train)
    y = ConvBN(self.features, 1, 1, None, self.ops, name="project")(y, train)
    if self.strides == 1 and in_channels == self.features:
      y = y + x
    return y
