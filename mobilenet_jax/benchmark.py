r"""Training and inference speed of a config's model, optionally beside PyTorch.

  python -m mobilenet_jax.benchmark --config=configs/mobilenet_v1.py:res=128 \
      --batch_size=32 --steps=10 --json=v1_128.json --torch

Reports, for `config.model` at `config.data.image_size`:
- `train_images_per_sec`: steady state (after compile) of the benchmark's own jitted
  step: softmax cross-entropy, gradients, an optax RMSprop update, BatchNorm in train
  mode, the state donated. It is deliberately small and is not the real trainer
  (mobilenet_jax/train/): no EMA, weight decay, schedule or sharding.
- `infer_images_per_sec` at --batch_size and `latency_ms_batch1`, medians of several runs.
- `compile_s`: trace, lower and compile of the train step with an empty persistent
  compilation cache (a first run); `compile_cached_s`: the same again with the
  in-memory caches cleared and the persistent cache filled (a second run, a resumed
  run, a later sweep point: mobilenet_jax/runtime.py).
- `peak_host_mem_mb` (ru_maxrss, taken before PyTorch runs) and `device_peak_mem_mb`
  where the backend reports `memory_stats()`.
Every jit takes the per-jit XLA options of `runtime.compiler_options` ("train" for the
step, "inference" for the rest), as the trainer, `evaluate` and `predict` do.
With --torch the same architecture in PyTorch (mobilenet_jax/torch_reference.py) runs
with the same batch, resolution and optimizer, and `ratios` holds JAX / PyTorch
throughput and PyTorch / JAX latency (>= 1 means JAX is at least as fast).

On Linux the command re-executes itself once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(--malloc_hugetlb, on by default), as `main`, `evaluate` and `predict` do
(mobilenet_jax/runtime.py): XLA:CPU allocates its large temporaries afresh on every
call and, with 4 KiB pages, page faults cost as much as the arithmetic; with
transparent huge pages they mostly go away. PyTorch, in the same process, gets the same
allocator.

Installed with pip, the same program is `mobilenet-benchmark`.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mobilenet_jax import cli, models, runtime
from mobilenet_jax.errors import UserError
from mobilenet_jax.models.kernels import cpu_kernels
from mobilenet_jax.models.kernels.depthwise import resolve_impl
from mobilenet_jax.models.kernels.pointwise import resolve_pointwise_impl

LEARNING_RATE = 0.01  # Any value: only the speed of the update matters here.


def optimizer() -> optax.GradientTransformation:
  """RMSprop as in the paper configs (decay 0.9, momentum 0.9, epsilon 1.0)."""
  return optax.rmsprop(LEARNING_RATE, decay=0.9, eps=1.0, momentum=0.9)


def make_train_step(model, tx: optax.GradientTransformation) -> Callable:
  """The benchmark's jitted step: (params, batch_stats, opt_state) -> new state, loss."""

  def loss_fn(params, batch_stats, images, labels, key):
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": key})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, updates["batch_stats"]

  @functools.partial(jax.jit, donate_argnums=0,
                     compiler_options=runtime.compiler_options("train"))
  def step(state, images, labels, key):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, images, labels, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  return step


def _median_seconds(fn: Callable[[], Any], runs: int) -> float:
  """Median wall time of `runs` calls of `fn`, each waited for."""
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _device_peak_mem_mb() -> float | None:
  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def peak_host_mem_mb() -> float:
  """The process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _compile_cold_and_cached(jitted, *args):
  """(executable, seconds of a first compile, seconds of a compile from the cache).

  Both include tracing and lowering, which a second process also pays.
  """
  with runtime.scratch_compilation_cache():
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.clear_caches()  # Forget the in-memory executable: the next one is read back.
    start = time.perf_counter()
    jitted.lower(*args).compile()
    compile_cached_s = time.perf_counter() - start
  return compiled, compile_s, compile_cached_s


def benchmark_jax(config, batch: int, steps: int, warmup: int = 1,
                  latency_runs: int = 10, infer_runs: int = 5) -> dict:
  """Times training and inference of `config.model` at `config.data.image_size`."""
  res = config.data.image_size
  model = models.create(config.model)
  variables = models.init_variables(model, jax.random.key(0))
  tx = optimizer()
  state = (variables["params"], variables["batch_stats"],
           tx.init(variables["params"]))
  images = jax.random.normal(jax.random.key(1), (batch, res, res, 3), jnp.float32)
  labels = jax.random.randint(jax.random.key(2), (batch,), 0,
                              config.model.num_classes)
  key = jax.random.key(3)

  step = make_train_step(model, tx)
  compiled, compile_s, compile_cached_s = _compile_cold_and_cached(
      step, state, images, labels, key)
  for _ in range(warmup):
    state, loss = compiled(state, images, labels, key)
  jax.block_until_ready(loss)
  step_times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, loss = compiled(state, images, labels, key)
    jax.block_until_ready(loss)
    step_times.append(time.perf_counter() - start)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"The benchmark's train step diverged: loss={loss}.")

  eval_vars = {"params": state[0], "batch_stats": state[1]}
  infer = jax.jit(lambda v, x: model.apply(v, x, train=False),
                  compiler_options=runtime.compiler_options("inference"))
  jax.block_until_ready(infer(eval_vars, images))
  infer_s = _median_seconds(lambda: infer(eval_vars, images), infer_runs)
  one = images[:1]
  jax.block_until_ready(infer(eval_vars, one))
  latency_s = _median_seconds(lambda: infer(eval_vars, one), latency_runs)

  step_s = statistics.median(step_times)
  return {
      "train_images_per_sec": batch / step_s,
      "train_step_ms": 1e3 * step_s,
      "train_step_ms_all": [round(1e3 * t, 2) for t in step_times],
      "infer_images_per_sec": batch / infer_s,
      "latency_ms_batch1": 1e3 * latency_s,
      "compile_s": compile_s,
      "compile_cached_s": compile_cached_s,
      "peak_host_mem_mb": peak_host_mem_mb(),
      "device_peak_mem_mb": _device_peak_mem_mb(),
      "final_loss": float(loss),
  }


def describe(config, batch: int, steps: int) -> dict:
  """What ran where: the model, the implementations chosen and the machine."""
  device = jax.devices()[0]
  return {
      "model": config.model.name,
      "width": config.model.width,
      "resolution": config.data.image_size,
      "batch": batch,
      "steps": steps,
      "depthwise_impl": resolve_impl(config.model.get("depthwise_impl", "auto")),
      # Whether the C++ kernels run (depthwise "ffi", BatchNorm's reductions), else
      # their pure-JAX fallbacks.
      "cpu_kernels": jax.default_backend() == "cpu" and cpu_kernels.available(),
      "pointwise_impl": resolve_pointwise_impl(config.model.get("pointwise_impl", "auto")),
      "dtype": config.model.get("dtype", "float32"),
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "jax_version": jax.__version__,
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      # Other processes on the machine skew every figure; record how busy it was.
      "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
      "date": datetime.date.today().isoformat(),
  }


def ratios(jax_result: dict, torch_result: dict) -> dict:
  """JAX relative to PyTorch; every ratio >= 1 means JAX is at least as fast."""
  return {
      "train_images_per_sec": (jax_result["train_images_per_sec"]
                               / torch_result["train_images_per_sec"]),
      "infer_images_per_sec": (jax_result["infer_images_per_sec"]
                               / torch_result["infer_images_per_sec"]),
      "latency_ms_batch1": (torch_result["latency_ms_batch1"]
                            / jax_result["latency_ms_batch1"]),
  }


def format_report(result: dict) -> str:
  """A short human-readable table of the JSON result."""
  info = result["setup"]
  lines = [f"{info['model']} width={info['width']} res={info['resolution']} "
           f"batch={info['batch']} depthwise={info['depthwise_impl']} "
           f"(C++ kernels: {info.get('cpu_kernels')}) "
           f"pointwise={info['pointwise_impl']} backend={info['backend']} "
           f"load(1m)={info['load_avg_1m_at_start']}->{info.get('load_avg_1m_at_end')}"]
  keys = ("train_images_per_sec", "infer_images_per_sec", "latency_ms_batch1",
          "compile_s", "compile_cached_s", "peak_host_mem_mb")
  torch_result = result.get("torch")
  lines.append(f"{'':24} {'JAX':>10}" + (f" {'PyTorch':>10} {'ratio':>7}"
                                          if torch_result else ""))
  for key in keys:
    line = f"{key:24} {result[key]:>10.2f}"
    if torch_result and key in torch_result:
      line += f" {torch_result[key]:>10.2f}"
      if key in result["ratios"]:
        line += f" {result['ratios'][key]:>7.2f}"
    lines.append(line)
  return "\n".join(lines)


def _torch_reference():
  """mobilenet_jax.torch_reference, imported only here: PyTorch is never required."""
  try:
    from mobilenet_jax import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise UserError(f"--torch needs PyTorch ({error}): pip install torch==2.13.0; it "
                    "is a benchmark-only dependency.") from None
  return torch_reference


def run(config, batch: int, steps: int, with_torch: bool = False,
        torch_threads: int | None = None, latency_runs: int = 10) -> dict:
  """The whole benchmark as one JSON-ready dict (see the module docstring)."""
  result = {"setup": describe(config, batch, steps)}
  result.update(benchmark_jax(config, batch, steps, latency_runs=latency_runs))
  if with_torch:
    torch_reference = _torch_reference()
    result["torch"] = torch_reference.benchmark(
        config.model, config.data.image_size, batch, steps,
        threads=torch_threads or os.cpu_count(), latency_runs=latency_runs)
    result["ratios"] = ratios(result, result["torch"])
  result["setup"]["load_avg_1m_at_end"] = (os.getloadavg()[0] if hasattr(os, "getloadavg")
                                           else None)
  return result


def define_flags() -> None:
  """The flags of `mobilenet-benchmark`."""
  cli.define_config()
  cli.define_batch_size(32, "Batch size for training and batched inference.")
  flags.DEFINE_integer("steps", 10, "Timed training steps (after one warm-up step).")
  flags.DEFINE_integer("latency_runs", 10, "Timed batch-1 inference runs.")
  cli.define_json()
  flags.DEFINE_bool("torch", False, "Also run the PyTorch reference and the ratios.")
  flags.DEFINE_integer("torch_threads", None, "torch.set_num_threads; default: cores.")
  flags.DEFINE_bool("malloc_hugetlb", True,
                    "Re-execute with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (Linux).")


def main(argv):
  """absl entry point."""
  del argv
  f = flags.FLAGS
  runtime.prepare_process("mobilenet_jax.benchmark", hugepages=f.malloc_hugetlb)
  result = run(f.config, f.batch_size, f.steps, f.torch, f.torch_threads,
               f.latency_runs)
  cli.print_result(result, format_report(result), f.json)


def console_main():
  """The `mobilenet-benchmark` console script (and `python -m mobilenet_jax.benchmark`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
