"""Every fast formulation of the depthwise, 1x1 and full 3x3 convolutions and of
BatchNorm equals the reference.

The reference is XLA's convolution (grouped for depthwise, nn.Conv for 1x1) and
autodiff of two-pass BatchNorm; each alternative must match it in values and in
gradients, at strides 1 and 2 and at odd and even sizes.
"""

import functools
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mobilenet_v1, mobilenet_v2
from mobilenet_jax import models
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models.kernels import batch_norm, batchnorm_ffi, cpu_kernels, depthwise
from mobilenet_jax.models.kernels.pointwise import resolve_pointwise_impl
from mobilenet_jax.models.kernels.spatial_conv import (conv_by_patches,
                                                       resolve_spatial_conv_impl,
                                                       use_patches)
from mobilenet_jax.models.layers import PatchesConv, PointwiseConv

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


@functools.cache
def _depthwise_case(impl, x_shape, k, strides, dtype):
  """Values and gradients of `impl` on fixed random inputs (the XLA reference is
  computed once per case and shared by every implementation compared with it)."""
  x = jax.random.normal(jax.random.key(0), x_shape, jnp.float32).astype(dtype)
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, x_shape[-1]),
                             jnp.float32).astype(dtype)
  return _values_and_grads(lambda a, b: depthwise.depthwise_conv(a, b, strides, impl),
                           x, kernel)


@pytest.mark.parametrize("impl", FAST_DEPTHWISE)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [(7, 8), (6, 9)])  # Odd and even, H and W.
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_depthwise_matches_grouped_conv(impl, strides, size, dtype):
  case = lambda name: _depthwise_case(name, (2, *size, 5), 3, strides, dtype)
  _assert_close(case(impl), case("xla"), dtype)


@pytest.mark.parametrize("impl", ["shift_vjp", "ffi"])
@pytest.mark.parametrize("batch", [1, 3, 8])  # Scan chunks of 1, 1 and 4 images.
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_hand_written_backward_any_batch_and_kernel_size(impl, batch, strides, k):
  # shift_vjp splits the batch into scan chunks; both pad by k.
  case = lambda name: _depthwise_case(name, (batch, 7, 6, 3), k, strides, jnp.float32)
  _assert_close(case(impl), case("xla"), jnp.float32)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "c++") is None,
                    reason="no C++ compiler: the ffi implementation falls back")
def test_the_cpu_kernels_run_where_a_compiler_exists():
  # Else the equality tests here would only test the pure-JAX fallbacks.
  assert cpu_kernels.available()
  x = jnp.ones((2, 8, 8, 4))
  kernel = jnp.ones((3, 3, 1, 4))
  ones = jnp.ones((4,))

  def loss(a):
    y = depthwise.depthwise_conv(a, kernel, 1, "ffi")
    return batch_norm.batch_norm_train(y[None], ones, ones, 1e-3, "relu6")[0].sum()

  text = jax.jit(jax.value_and_grad(loss)).lower(x).compile().as_text()
  for target in cpu_kernels.TARGETS:
    assert target in text


def test_ffi_falls_back_without_the_kernel(monkeypatch):
  monkeypatch.setattr(cpu_kernels, "available", lambda: False)
  x = jax.random.normal(jax.random.key(0), (2, 7, 8, 5))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 5))
  fn = jax.jit(lambda a, b: depthwise.depthwise_conv(a, b, 2, "ffi"))
  assert "mobilenet_depthwise" not in fn.lower(x, kernel).as_text()
  _assert_close((fn(x, kernel),), (depthwise.depthwise_conv(x, kernel, 2, "xla"),),
                jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("batch", [2, 3, 8])  # Odd and even batches.
def test_pointwise_dot_matches_conv(dtype, batch):
  x = jax.random.normal(jax.random.key(0), (batch, 5, 6, 7), jnp.float32).astype(dtype)
  conv = nn.Conv(4, (1, 1), use_bias=False, dtype=dtype, param_dtype=jnp.float32)
  _assert_layer_matches(PointwiseConv(4, dtype), conv, x, dtype)


def _assert_layer_matches(layer, conv, x, dtype):
  """`layer` has nn.Conv `conv`'s parameter tree, and its values and gradients."""
  params = conv.init(jax.random.key(1), x)["params"]
  assert jax.tree.map(jnp.shape, layer.init(jax.random.key(1), x)["params"]) == \
      jax.tree.map(jnp.shape, params)
  run = lambda module: _values_and_grads(
      lambda a, k: module.apply({"params": {"kernel": k}}, a), x, params["kernel"])
  _assert_close(run(layer), run(conv), dtype)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 8), (6, 9)])  # Odd, even, tiny.
def test_conv_by_patches_matches_xla_same_padding(strides, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 5))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 5, 4))
  xla = lambda a, k: jax.lax.conv_general_dilated(
      a, k, (strides, strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _assert_close(_values_and_grads(lambda a, k: conv_by_patches(a, k, strides), x, kernel),
                _values_and_grads(xla, x, kernel), jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_patches_conv_layer_matches_nn_conv(dtype):
  # 4x4 at stride 2 takes the patches path, 8x8 at stride 1 XLA's: both must match.
  for size, strides, channels in ((4, 2, 32), (8, 1, 6)):
    x = jax.random.normal(jax.random.key(0), (2, size, size, channels)).astype(dtype)
    conv = nn.Conv(4, (3, 3), strides=strides, padding="SAME", use_bias=False,
                   dtype=dtype, param_dtype=jnp.float32)
    _assert_layer_matches(PatchesConv(4, 3, strides, dtype), conv, x, dtype)
  assert use_patches(4, 32, 2) and use_patches(2, 512, 1)
  assert not use_patches(8, 128, 1) and not use_patches(32, 3, 2)  # Stem: XLA's.


def test_auto_picks_the_fast_paths_on_cpu_and_xla_elsewhere():
  assert depthwise.resolve_impl("auto", "cpu") == "ffi"
  assert resolve_pointwise_impl("auto", "cpu") == "dot"
  assert resolve_spatial_conv_impl("auto", "cpu") == "patches"
  for backend in ("gpu", "tpu"):
    assert depthwise.resolve_impl("auto", backend) == "xla"
    assert resolve_pointwise_impl("auto", backend) == "xla"
    assert resolve_spatial_conv_impl("auto", backend) == "xla"
  with pytest.raises(ConfigError, match="pointwise_impl"):
    resolve_pointwise_impl("fft")


# V1 shallow (Table 5's: every layer kind of the full one, five blocks fewer to compile).
@pytest.mark.parametrize("module,arg", [(mobilenet_v1, ",depth=shallow"),
                                        (mobilenet_v1, ",depth=shallow,block=full_conv"),
                                        (mobilenet_v2, "")])
def test_fast_model_equals_reference_model(module, arg):
  config = module.get_config("width=0.25,res=32,num_classes=3" + arg)
  fast = models.create(config.model)
  config.model.depthwise_impl = config.model.pointwise_impl = "xla"
  config.model.spatial_conv_impl = "xla"
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


def _without_cpu_kernels(monkeypatch, kernels):
  if not kernels:
    monkeypatch.setattr(cpu_kernels, "applies", lambda *arrays: False)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu_kernels", "xla"])
@pytest.mark.parametrize("activation", ["relu6", "relu", None])
# 1 and 2 groups; 2 groups of 2 chunks each (12,800 pixels of 6 channels: the C++
# kernels reduce 10,922 rows per chunk), the second one partial.
@pytest.mark.parametrize("shape", [(1, 4, 5, 3, 6), (2, 3, 4, 4, 5), (2, 8, 40, 40, 6)])
def test_batch_norm_backward_equals_autodiff(shape, activation, kernels, monkeypatch):
  # batch_norm_train's hand-written VJP against autodiff of the same two-pass
  # statistics, affine and activation, with cotangents on all three outputs (the
  # activation and the running-average inputs mean and var) and gradients for x,
  # scale and bias. The input's spread puts pre-activations on both sides of 0 and 6.
  _without_cpu_kernels(monkeypatch, kernels)
  x = 4.0 * jax.random.normal(jax.random.key(0), shape) + 1.0
  channels = shape[-1]
  scale = 1.0 + jax.random.normal(jax.random.key(5), (channels,))
  bias = 2.0 * jax.random.normal(jax.random.key(6), (channels,))

  def reference(a, s, b):
    mean, var = batch_norm.moments(a)
    y = (a - mean) * jax.lax.rsqrt(var + 1e-3) * s + b
    return (batch_norm.ACTIVATIONS[activation](y) if activation else y), mean, var

  fused = lambda a, s, b: batch_norm.batch_norm_train(a, s, b, 1e-3, activation)
  outputs = jax.eval_shape(reference, x, scale, bias)
  cotangents = tuple(jax.random.normal(jax.random.key(i), o.shape)
                     for i, o in enumerate(outputs, start=1))
  # Jitted: op-by-op dispatch of the hand-written VJP compiles each op apart (~6 s).
  run = jax.jit(lambda fn, *args: (lambda out, vjp: (out, vjp(cotangents)))(
      *jax.vjp(fn, *args)), static_argnums=0)
  (actual_out, actual_grads), (expected_out, expected_grads) = (
      run(fn, x, scale, bias) for fn in (fused, reference))
  _assert_close(actual_out, expected_out, jnp.float32)
  _assert_close(actual_grads, expected_grads, jnp.float32)


def test_batch_norm_train_keeps_bfloat16_in_and_out():
  x = jax.random.normal(jax.random.key(0), (1, 4, 3, 3, 2)).astype(jnp.bfloat16)
  ones = jnp.ones((2,))
  out, vjp = jax.vjp(
      lambda a: batch_norm.batch_norm_train(a, ones, ones, 1e-3, "relu6")[0], x)
  (dx,) = vjp(jnp.ones_like(out))
  assert out.dtype == dx.dtype == jnp.bfloat16


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu_kernels", "xla"])
def test_batch_norm_statistics_stay_accurate_far_from_zero(kernels, monkeypatch):
  # |mean| / std = 1000: a one-pass E[x^2] - E[x]^2 would lose every digit of the
  # variance in float32; two-pass (and the kernels' per-chunk two-pass with Chan's
  # merge) keep it. Reference: float64 numpy.
  _without_cpu_kernels(monkeypatch, kernels)
  x = np.random.default_rng(0).normal(1000.0, 1.0, (1, 16, 32, 32, 4)).astype(np.float32)
  ones = jnp.ones((4,))
  _, mean, var = jax.jit(
      lambda a: batch_norm.batch_norm_train(a, ones, ones, 1e-3, None))(x)
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(np.asarray(mean).ravel(), x64.mean((0, 1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var).ravel(), x64.var((0, 1, 2, 3)), rtol=5e-7)


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
def test_batch_norm_gradient_sums_as_accurate_as_a_pairwise_sum():
  # 16,384 rows of 4 channels in one chunk: a sequential float32 sum drifts by ~1e-6 of
  # the sum of magnitudes, enough to change a tiny model's Adam step (test_training's
  # 1-vs-8-device comparison, now 1-vs-4, caught that); the kernel's float blocks added
  # in double stay near 1e-8.
  rng = np.random.default_rng(0)
  shape = (1, 16, 32, 32, 4)
  g_out = rng.normal(0.5, 1.0, shape).astype(np.float32)
  x = rng.normal(0.0, 1.0, shape).astype(np.float32)
  zeros, ones = np.zeros((1, 1, 1, 1, 4), np.float32), np.ones((1, 1, 1, 1, 4), np.float32)
  g_sum, g_normalized_sum = jax.jit(
      lambda g, a: batchnorm_ffi.gradient_sums(g, a, zeros, ones, ones[0, 0, 0, 0],
                                               zeros[0, 0, 0, 0], None))(g_out, x)
  g64, x64 = g_out.astype(np.float64), x.astype(np.float64)
  for actual, terms in ((g_sum, g64), (g_normalized_sum, g64 * x64)):
    error = np.abs(np.asarray(actual).ravel() - terms.sum((0, 1, 2, 3)))
    assert (error / np.abs(terms).sum((0, 1, 2, 3))).max() < 1e-7
