"""Every fast formulation of the depthwise and 1x1 convolutions equals the reference.

The reference is XLA's convolution (grouped for depthwise, nn.Conv for 1x1); each
alternative must match it in values and in gradients with respect to the input and
the kernel, at strides 1 and 2 and at odd and even sizes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mobilenet_v1, mobilenet_v2
from mobilenet_jax import models
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models import depthwise
from mobilenet_jax.models.layers import PointwiseConv, resolve_pointwise_impl

FAST_DEPTHWISE = [name for name in depthwise.IMPLEMENTATIONS if name != "xla"]
# (atol, rtol) per dtype: float32 tight, bfloat16 loose (8 bits of mantissa).
TOLERANCE = {jnp.float32: (1e-4, 1e-4), jnp.bfloat16: (0.1, 0.05)}


def _values_and_grads(fn, x, kernel):
  """fn(x, kernel), and the gradients of a fixed random projection of it (one jit)."""
  shape = jax.eval_shape(fn, x, kernel).shape
  weights = jax.random.normal(jax.random.key(9), shape, jnp.float32)

  def value_and_grads(a, b):
    out, vjp = jax.vjp(fn, a, b)
    return (out,) + vjp(weights.astype(out.dtype))

  return jax.jit(value_and_grads)(x, kernel)


def _assert_close(actual, expected, dtype):
  atol, rtol = TOLERANCE[dtype]
  for a, e in zip(actual, expected):
    assert a.shape == e.shape and a.dtype == e.dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32),
                               atol=atol * max(1.0, float(jnp.abs(e).max())), rtol=rtol)


@pytest.mark.parametrize("impl", FAST_DEPTHWISE)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [(7, 8), (6, 9)])  # Odd and even, H and W.
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_depthwise_matches_grouped_conv(impl, strides, size, dtype):
  x = jax.random.normal(jax.random.key(0), (2, *size, 5), jnp.float32).astype(dtype)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 5), jnp.float32).astype(dtype)
  run = lambda name: _values_and_grads(
      lambda a, b: depthwise.depthwise_conv(a, b, strides, name), x, kernel)
  _assert_close(run(impl), run("xla"), dtype)


@pytest.mark.parametrize("batch", [1, 3, 8])  # Scan chunks of 1, 1 and 4 images.
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_shift_vjp_backward_any_batch_and_kernel_size(batch, strides, k):
  # The hand-written backward splits the batch into scan chunks and pads by k.
  x = jax.random.normal(jax.random.key(0), (batch, 7, 6, 3), jnp.float32)
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 3), jnp.float32)
  run = lambda name: _values_and_grads(
      lambda a, b: depthwise.depthwise_conv(a, b, strides, name), x, kernel)
  _assert_close(run("shift_vjp"), run("xla"), jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pointwise_dot_matches_conv(dtype):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 7), jnp.float32).astype(dtype)
  conv = nn.Conv(4, (1, 1), use_bias=False, dtype=dtype, param_dtype=jnp.float32)
  dot = PointwiseConv(4, dtype)
  params = conv.init(jax.random.key(1), x)["params"]
  assert jax.tree.map(jnp.shape, dot.init(jax.random.key(1), x)["params"]) == \
      jax.tree.map(jnp.shape, params)
  run = lambda module: _values_and_grads(
      lambda a, k: module.apply({"params": {"kernel": k}}, a), x, params["kernel"])
  _assert_close(run(dot), run(conv), dtype)


def test_auto_picks_the_fast_paths_on_cpu_and_xla_elsewhere():
  assert depthwise.resolve_impl("auto", "cpu") == "shift_vjp"
  assert resolve_pointwise_impl("auto", "cpu") == "dot"
  for backend in ("gpu", "tpu"):
    assert depthwise.resolve_impl("auto", backend) == "xla"
    assert resolve_pointwise_impl("auto", backend) == "xla"
  with pytest.raises(ConfigError, match="pointwise_impl"):
    resolve_pointwise_impl("fft")


@pytest.mark.parametrize("module", [mobilenet_v1, mobilenet_v2])
def test_fast_model_equals_reference_model(module):
  config = module.get_config("width=0.25,res=32,num_classes=3")
  fast = models.create(config.model)
  config.model.depthwise_impl = config.model.pointwise_impl = "xla"
  reference = models.create(config.model)
  variables = models.init_variables(reference, jax.random.key(0))
  # Same parameter tree: checkpoints move between implementations.
  assert jax.tree.structure(variables) == jax.tree.structure(
      models.init_variables(fast, jax.random.key(0)))
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

  # Eval-mode BatchNorm: in train mode a batch of 2 at 1x1 pixels normalizes by a
  # near-zero variance, which amplifies float rounding past any useful tolerance.
  def loss_and_grads(model):
    def loss(params):
      logits = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                           images)
      return jnp.sum(logits ** 2)
    return jax.jit(jax.value_and_grad(loss))(variables["params"])

  (fast_loss, fast_grads), (ref_loss, ref_grads) = map(loss_and_grads, (fast, reference))
  np.testing.assert_allclose(fast_loss, ref_loss, rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3),
               fast_grads, ref_grads)
