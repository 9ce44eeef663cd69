"""The formulations of the depthwise convolution, by name (`IMPLEMENTATIONS`).

Every MobileNet block runs one depthwise convolution, and how fast it is depends on the
backend: XLA's grouped convolution (`feature_group_count=C`) is fast on GPU and TPU but
slow on CPU; there "auto" takes a C++ kernel (`ffi`, depthwise_ffi.py), or where it
cannot be built the fused shifted multiply-adds with a hand-written backward. The
networks use the layer `models.depthwise.DepthwiseConv`; which formulation computes it
is a config choice (`config.model.depthwise_impl`), and every formulation is tested
equal to the grouped convolution. Each takes the kernel as (k, k, 1, C), so
checkpoints move freely between them.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from mobilenet_jax.models import validation
from mobilenet_jax.models.kernels import cpu_kernels, depthwise_ffi
from mobilenet_jax.models.kernels.padding import pad_same, same_padding


def _grouped_conv(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """Depthwise conv as XLA's grouped convolution (the reference formulation)."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(strides, strides), padding="SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def _valid_taps(x: jax.Array, taps: jax.Array, out_h: int, out_w: int,
                strides: int) -> jax.Array:
  """sum over (i, j) of the (i, j)-shifted, strided slice of `x` times taps[i, j].

  A "VALID" depthwise conv of already padded `x` with (k, k, C) taps: elementwise
  work that XLA fuses into one loop.
  """
  k = taps.shape[0]
  out = None
  for i in range(k):
    for j in range(k):
      window = jax.lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (out_h - 1) * strides + 1, j + (out_w - 1) * strides + 1,
           x.shape[3]),
          (1, strides, strides, 1))
      term = window * taps[i, j]
      out = term if out is None else out + term
  return out


def _shifted_multiply_add(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """Depthwise conv as k*k shifted, strided slices multiplied by per-channel taps.

  Elementwise work that XLA fuses into one loop; on CPU it beats the grouped
  convolution several times over.
  """
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  out_h, out_w = -(-h // strides), -(-w // strides)
  return _valid_taps(pad_same(x, k, strides), kernel[:, :, 0, :], out_h, out_w,
                     strides)


# Images per step of the kernel-gradient scan: a few images' slices stay in cache and
# the loop overhead stays small (1, 2, 4 and 8 measured; 4 fastest, RESULTS.md).
_SCAN_IMAGES = 4


def _input_grad(g: jax.Array, taps: jax.Array, h: int, w: int,
                strides: int) -> jax.Array:
  """The transposed depthwise conv: d(sum(out * g))/dx for an (h, w) input.

  Spreads g onto the stride grid (zeros between, lax.pad's interior padding), pads it
  so that every output pixel sees all k*k taps, then runs the fused stride-1 shifted
  multiply-add with the flipped kernel. Autodiff instead pads each of the k*k slices'
  cotangents back to full size and adds them: k*k full-size temporaries.
  """
  k = taps.shape[0]
  (top, _), (left, _) = same_padding(h, k, strides), same_padding(w, k, strides)
  spread_h, spread_w = (g.shape[1] - 1) * strides + 1, (g.shape[2] - 1) * strides + 1
  lo_h, lo_w = k - 1 - top, k - 1 - left
  g = jax.lax.pad(g, jnp.zeros((), g.dtype),
                  ((0, 0, 0), (lo_h, h + k - 1 - lo_h - spread_h, strides - 1),
                   (lo_w, w + k - 1 - lo_w - spread_w, strides - 1), (0, 0, 0)))
  return _valid_taps(g, taps[::-1, ::-1], h, w, 1)


def _kernel_grad(x_pad: jax.Array, g: jax.Array, k: int, strides: int) -> jax.Array:
  """dk[i, j, c] = sum over n, h, w of x_pad[n, i + s*h, j + s*w, c] * g[n, h, w, c].

  Computed a few images at a time inside a lax.scan, accumulated in float32: over
  the whole batch XLA:CPU materializes each shifted slice (8 full-size copies) before
  reducing it; per few images the slices stay in cache.
  """
  n, out_h, out_w, c = g.shape
  chunk = next(d for d in (_SCAN_IMAGES, 2, 1) if n % d == 0)

  def step(total, images):
    x_i, g_i = (a.astype(jnp.float32) for a in images)
    sums = []
    for i in range(k):
      for j in range(k):
        window = jax.lax.slice(
            x_i, (0, i, j, 0),
            (chunk, i + (out_h - 1) * strides + 1, j + (out_w - 1) * strides + 1, c),
            (1, strides, strides, 1))
        sums.append(jnp.sum(window * g_i, axis=(0, 1, 2)))
    return total + jnp.stack(sums), None

  chunks = (x_pad.reshape(n // chunk, chunk, *x_pad.shape[1:]),
            g.reshape(n // chunk, chunk, *g.shape[1:]))
  total, _ = jax.lax.scan(step, jnp.zeros((k * k, c), jnp.float32), chunks)
  return total.reshape(k, k, 1, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_custom_vjp(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """`_shifted_multiply_add` with a hand-written backward (faster on CPU, RESULTS.md).

  Reverse mode only: jax.jvp / jacfwd through it raise (custom_vjp).
  """
  return _shifted_multiply_add(x, kernel, strides)


def _shift_custom_vjp_fwd(x, kernel, strides):
  """The forward, keeping x and the kernel for the backward."""
  return _shifted_multiply_add(x, kernel, strides), (x, kernel)


def _shift_custom_vjp_bwd(strides, residuals, g):
  """(dx, dkernel) for output gradient g, in the inputs' dtypes."""
  x, kernel = residuals
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  dx = _input_grad(g, kernel[:, :, 0, :].astype(g.dtype), h, w, strides)
  dk = _kernel_grad(pad_same(x, k, strides), g, k, strides)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_shift_custom_vjp.defvjp(_shift_custom_vjp_fwd, _shift_custom_vjp_bwd)


def _cpu_kernel(x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """The C++ XLA:CPU kernel (depthwise_ffi.py); `shift_vjp` where it does not apply
  (not float32, not one CPU device, or no compiler: `cpu_kernels.applies`)."""
  if cpu_kernels.applies(x, kernel):
    return depthwise_ffi.depthwise_conv(x, kernel, strides)
  return _shift_custom_vjp(x, kernel, strides)


IMPLEMENTATIONS: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "xla": _grouped_conv,
    "shift": _shifted_multiply_add,
    "shift_vjp": _shift_custom_vjp,
    "ffi": _cpu_kernel,
}


def resolve_impl(name: str, backend: str | None = None) -> str:
  """Maps "auto" to the fastest implementation for the backend; checks the name."""
  # ffi: the C++ kernel, the fastest on CPU per layer and per train step (RESULTS.md);
  # it falls back to shift_vjp (shift's forward, a faster backward) by itself.
  return validation.resolve_backend_choice("model.depthwise_impl", name, IMPLEMENTATIONS,
                                           "ffi", "xla", backend)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: int = 1,
                   impl: str = "auto") -> jax.Array:
  """Applies a (k, k, 1, C) depthwise kernel to NHWC `x` with TF "SAME" padding."""
  return IMPLEMENTATIONS[resolve_impl(impl)](x, kernel, strides)

