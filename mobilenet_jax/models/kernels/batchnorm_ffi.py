"""BatchNorm's training reductions as C++ XLA:CPU kernels (batchnorm_cpu.cc) via `jax.ffi`.

Both take x as [groups, ...pixels..., C] float32 and return per-group, per-channel
values shaped [groups, 1, ..., 1, C], as `batch_norm.batch_norm_train` uses them.
cpu_kernels.py builds and registers them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MOMENTS = "mobilenet_batch_norm_moments"
_GRADIENT_SUMS = "mobilenet_batch_norm_gradient_sums"
# The activation codes of batchnorm_cpu.cc.
ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2}


def _per_channel(x: jax.Array) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((x.shape[0], x.shape[-1]), jnp.float32)


def _kept_dims(value: jax.Array, x: jax.Array) -> jax.Array:
  return value.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],))


def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance of x over its pixel axes, per group and channel."""
  mean, var = jax.ffi.ffi_call(_MOMENTS, (_per_channel(x),) * 2,
                               vmap_method="sequential")(x)
  return _kept_dims(mean, x), _kept_dims(var, x)


def gradient_sums(g_out: jax.Array, x: jax.Array, mean: jax.Array, inv: jax.Array,
                  scale: jax.Array, bias: jax.Array,
                  activation: str | None) -> tuple[jax.Array, jax.Array]:
  """sum(g) and sum(g * normalized) per group and channel, g = g_out masked by the
  activation's derivative at normalized * scale + bias, normalized = (x - mean) * inv.
  """
  flat = lambda v: v.reshape(x.shape[0], x.shape[-1])
  g_sum, g_normalized_sum = jax.ffi.ffi_call(
      _GRADIENT_SUMS, (_per_channel(x),) * 2, vmap_method="sequential")(
          g_out, x, flat(mean), flat(inv), scale, bias,
          activation=ACTIVATION_CODES[activation])
  return _kept_dims(g_sum, x), _kept_dims(g_normalized_sum, x)
