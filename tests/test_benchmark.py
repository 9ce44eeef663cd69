"""Smoke test of the benchmark's JSON at a tiny size; PyTorch only when installed."""

import importlib.util

import pytest

from configs import mobilenet_v1
from mobilenet_jax import benchmark
from mobilenet_jax.models.kernels.depthwise import resolve_impl

KEYS = ("train_images_per_sec", "infer_images_per_sec", "latency_ms_batch1",
        "compile_s", "compile_cached_s", "peak_host_mem_mb")


def test_benchmark_reports_every_figure():
  # One run (a benchmark compiles twice): with the PyTorch twin where torch is there.
  with_torch = importlib.util.find_spec("torch") is not None
  config = mobilenet_v1.get_config("width=0.25,res=32,num_classes=4")
  result = benchmark.run(config, batch=2, steps=1, with_torch=with_torch,
                         torch_threads=1, latency_runs=1)
  for key in KEYS:
    assert result[key] > 0, key
  assert result["setup"]["depthwise_impl"] == resolve_impl("auto")
  # The second compile reads the first one's executable back from the cache.
  assert result["compile_cached_s"] < result["compile_s"]
  assert "device_peak_mem_mb" in result
  if with_torch:
    for key in ("train_images_per_sec", "infer_images_per_sec", "latency_ms_batch1"):
      assert result["torch"][key] > 0 and result["ratios"][key] > 0
  assert benchmark.format_report(result).count("\n") >= 5
