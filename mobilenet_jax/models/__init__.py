"""Flax Linen MobileNets and `create`, which builds one from `config.model`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models.kernels.depthwise import resolve_impl
from mobilenet_jax.models.kernels.pointwise import resolve_pointwise_impl
from mobilenet_jax.models.kernels.spatial_conv import resolve_spatial_conv_impl
from mobilenet_jax.models.layers import Ops, norm_factory
from mobilenet_jax.models.mobilenet_v1 import MobileNetV1
from mobilenet_jax.models.mobilenet_v2 import MobileNetV2
from mobilenet_jax.models.validation import check_choice

__all__ = ["MobileNetV1", "MobileNetV2", "Ops", "create", "init_variables", "MODELS",
           "DTYPES", "REFERENCE_BN_MOMENTUM"]

MODELS = {"mobilenet_v1": MobileNetV1, "mobilenet_v2": MobileNetV2}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# BatchNorm decay of the reference implementations (TF-slim's
# mobilenet_v1.py 0.9997, mobilenet_v2.py 0.997); used when config.model.bn_momentum is None
# (see mobilenet_jax/train/batchnorm.py for how a training run chooses it).
REFERENCE_BN_MOMENTUM = {"mobilenet_v1": 0.9997, "mobilenet_v2": 0.997}


def create(model_config, bn_group_size: int = 0, frozen_bn: bool = False) -> nn.Module:
  """Builds the network that `config.model` describes.

  `bn_group_size` > 0 computes BatchNorm statistics over groups of that many examples
  instead of the whole batch; `frozen_bn` normalizes with the running statistics in
  training too (a frozen backbone). Both are training choices, so they come from
  outside the model section. Every choice of how the layers compute is made here,
  once, into one `Ops` that all blocks share.
  """
  check_choice("model.name", model_config.name, MODELS)
  check_choice("model.dtype", model_config.get("dtype", "float32"), DTYPES)
  if bn_group_size < 0:
    raise ConfigError(f"bn_group_size must be >= 0, got {bn_group_size}.")
  momentum = model_config.get("bn_momentum")
  if momentum is None:
    momentum = REFERENCE_BN_MOMENTUM[model_config.name]
  ops = Ops(
      depthwise=resolve_impl(model_config.get("depthwise_impl", "auto")),
      pointwise=resolve_pointwise_impl(model_config.get("pointwise_impl", "auto")),
      spatial_conv=resolve_spatial_conv_impl(
          model_config.get("spatial_conv_impl", "auto")),
      batch_norm=norm_factory(momentum, model_config.bn_epsilon, bn_group_size,
                              frozen_bn),
      dtype=DTYPES[model_config.get("dtype", "float32")],
  )
  kwargs = dict(num_classes=model_config.num_classes, width=model_config.width,
                dropout_rate=model_config.dropout_rate, ops=ops)
  if model_config.name == "mobilenet_v1":
    kwargs.update(depth=model_config.depth, block=model_config.block,
                  activation=model_config.activation)
  return MODELS[model_config.name](**kwargs)


# Initialization runs once, so its code need not be fast; XLA's CPU backend spends
# most of a MobileNet init's compile time optimizing its random-number kernels
# (figures: benchmarks/RESULTS.md).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                          "xla_llvm_disable_expensive_passes": True}


def init_variables(model: nn.Module, rng: jax.Array) -> dict:
  """Initial {"params", "batch_stats"} of `model`, at any resolution it will see.

  MobileNets are fully convolutional with a global pool, so their variables do not
  depend on the input size: they are made from one image at the smallest resolution.
  """
  images = jnp.zeros((1, 32, 32, 3), jnp.float32)
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  if isinstance(rng, jax.core.Tracer):  # Under jax.eval_shape or another transform.
    return init(rng, images)
  compiled = init.lower(rng, images).compile(compiler_options=_INIT_COMPILER_OPTIONS)
  return compiled(rng, images)
