r"""Forward+backward time of one depthwise, 1x1 or full 3x3 convolution per
implementation.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m benchmarks.layer_profile \
      --shape=32,56,56,128 --strides=1

Prints the median seconds of a jitted value-and-gradient (w.r.t. input and kernel) of
each depthwise implementation, of the 1x1 convolution as XLA conv and as a dot, and of
a full 3x3 convolution (C -> --out_channels, at --strides) as XLA conv and as a product
over patches, at one NHWC shape: the per-layer-type profile behind
benchmarks/RESULTS.md. --shape=v1_128 runs the six depthwise shapes of MobileNet V1 at
128 input, batch 32.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp

from mobilenet_jax import cli
from mobilenet_jax.models.kernels import depthwise, spatial_conv


def median_seconds(fn, *args, runs: int = 5) -> float:
  """Median wall time of `runs` calls of the jitted `fn` after one warm-up call."""
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def fwd_bwd(conv):
  """x, kernel -> (d/dx, d/dkernel) of sum(conv(x, kernel)): one training pass."""
  return jax.grad(lambda x, k: jnp.sum(conv(x, k)), argnums=(0, 1))


def profile(shape: tuple[int, ...], strides: int,
            out_channels: int | None = None) -> dict[str, float]:
  """{implementation: seconds} for one depthwise, one 1x1 and one full 3x3 layer."""
  x = jax.random.normal(jax.random.key(0), shape)
  channels = shape[-1]
  dw_kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, channels))
  pw_kernel = jax.random.normal(jax.random.key(2), (1, 1, channels, channels))
  results = {}
  for name, impl in depthwise.IMPLEMENTATIONS.items():
    results[f"depthwise/{name}"] = median_seconds(
        fwd_bwd(lambda a, k, impl=impl: impl(a, k, strides)), x, dw_kernel)
  conv = lambda a, k: jax.lax.conv_general_dilated(
      a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  dot = lambda a, k: jax.lax.dot_general(a, k[0, 0], (((3,), (0,)), ((), ())))
  results["pointwise/xla"] = median_seconds(fwd_bwd(conv), x, pw_kernel)
  results["pointwise/dot"] = median_seconds(fwd_bwd(dot), x, pw_kernel)
  full_kernel = jax.random.normal(jax.random.key(3),
                                  (3, 3, channels, out_channels or channels))
  full = lambda a, k: jax.lax.conv_general_dilated(
      a, k, (strides, strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  patches = lambda a, k: spatial_conv.conv_by_patches(a, k, strides)
  results["full3x3/xla"] = median_seconds(fwd_bwd(full), x, full_kernel)
  results["full3x3/patches"] = median_seconds(fwd_bwd(patches), x, full_kernel)
  return results


# (NHWC shape, strides) of every distinct depthwise layer of MobileNet V1, 128 input.
V1_128 = (((32, 64, 64, 32), 1), ((32, 64, 64, 64), 2), ((32, 32, 32, 128), 1),
          ((32, 16, 16, 256), 1), ((32, 8, 8, 512), 1), ((32, 4, 4, 1024), 1))


def define_flags() -> None:
  """The flags of the layer profile."""
  flags.DEFINE_string("shape", "32,56,56,128",
                      "NHWC shape, comma-separated, or v1_128 (every V1 shape at 128).")
  flags.DEFINE_integer("strides", 1, "Depthwise and full 3x3 strides (with a --shape "
                       "N,H,W,C).")
  flags.DEFINE_integer("out_channels", None, "Output channels of the full 3x3 "
                       "convolution (default: C).")


def main(argv):
  """absl entry point: the milliseconds per implementation at each shape."""
  del argv
  f = flags.FLAGS
  if f.shape == "v1_128":
    runs = V1_128
  else:
    try:
      runs = ((tuple(int(v) for v in f.shape.split(",")), f.strides),)
    except ValueError:
      raise app.UsageError(f"--shape={f.shape}: give N,H,W,C or v1_128.") from None
  for shape, strides in runs:
    print(f"{shape} strides={strides}")
    for key, seconds in profile(shape, strides, f.out_channels).items():
      print(f"  {key:20} {seconds * 1e3:9.1f} ms")


if __name__ == "__main__":
  cli.run(main, define_flags)
