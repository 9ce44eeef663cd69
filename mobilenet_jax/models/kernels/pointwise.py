"""The formulations of the 1x1 convolution, by name (`POINTWISE_IMPLS`), and the matrix
product with a hand-written backward that "dot" runs.

The Flax layer is `models.layers.PointwiseConv` ("dot") or nn.Conv ("xla").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation

# How a 1x1 convolution is computed (`config.model.pointwise_impl`): "xla" is XLA's
# convolution (nn.Conv), "dot" one matrix product over the flattened pixels, which
# XLA:CPU hands to its fast GEMM while its 1x1 convolution path is several times
# slower (benchmarks/RESULTS.md).
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
  one product over all pixels is: benchmarks/RESULTS.md.) Reverse mode only.
  """
  return _fwd(x, kernel)[0]


def _fwd(x, kernel):
  out = _contract(x.reshape(-1, x.shape[-1]), kernel, 0)
  return out.reshape(x.shape[:-1] + kernel.shape[1:]), (x, kernel)


def _bwd(residuals, g):
  x, kernel = residuals
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  dx = _contract(g2, kernel, 1).reshape(x.shape).astype(x.dtype)
  dk = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
  return dx, dk.astype(kernel.dtype)


pointwise_dot.defvjp(_fwd, _bwd)
