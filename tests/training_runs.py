"""Runs `python -m mobilenet_jax.main` in subprocesses for the end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_overrides(data_dir: str, **extra) -> list[str]:
  """A deterministic tiny run: shapes10/tiny, 64 training images, no augmentation.

  Each step takes the whole 64-image train split as its batch and nothing random
  depends on where an example sits, so the run is the same computation however the
  batch is split over devices and processes, up to float rounding. A tiny MobileNet
  amplifies rounding differences within a few steps (its gradients are very sensitive
  to its weights), so the runs are short: 3 steps. The shallow V1 (Table 5's, without
  the five 512-channel blocks) has every layer kind of the full one and compiles ~5 s
  faster per process.
  """
  settings = {
      "data.name": "shapes10/tiny", "data.data_dir": data_dir,
      "data.train_split": "train[:64]", "data.random_flip": False,
      "data.crop_area_range": "(1.0, 1.0)", "data.crop_aspect_range": "(1.0, 1.0)",
      "global_batch_size": 64, "eval_batch_size": 40, "num_train_steps": 3,
      "log_every_steps": 1, "checkpoint_every_steps": 3, "model.dropout_rate": 0.0,
      "model.depth": "shallow",
      "model.bn_momentum": 0.9, "lr.warmup_epochs": 0.0, "lr.schedule": "constant",
      "label_smoothing": 0.0, "optimizer.name": "adamw", "lr.base": 0.004,
      "weight_decay": 0.0,
  }
  settings.update(extra)
  return [f"--config.{key}={value}" for key, value in settings.items()]


def env_with_devices(count: int, compile_cache: str | None = None) -> dict:
  env = dict(os.environ)
  if compile_cache:
    # Runs of one program after the first skip XLA's compilation (tens of seconds).
    env.update(JAX_COMPILATION_CACHE_DIR=compile_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  return env


def main_command(workdir: str, overrides: list[str],
                 config: str = "configs/mobilenet_v1.py:runlocal") -> list[str]:
  return [sys.executable, "-m", "mobilenet_jax.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def run_main(workdir: str, overrides: list[str], devices: int = 1,
             timeout: int = 400, compile_cache: str | None = None
             ) -> subprocess.CompletedProcess:
  """Runs training to the end in one process; raises with its output if it fails."""
  proc = subprocess.run(main_command(workdir, overrides), cwd=REPO,
                        env=env_with_devices(devices, compile_cache),
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


def run_two_processes(workdir: str, overrides: list[str], devices_each: int = 4,
                      timeout: int = 400, compile_cache: str | None = None) -> None:
  """Two processes on this machine, joined by a JAX coordinator on 127.0.0.1."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      main_command(workdir, overrides) + [
          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
          f"--process_id={i}"],
      cwd=REPO, env=env_with_devices(devices_each, compile_cache), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    if p.returncode:
      raise AssertionError(f"process failed ({p.returncode}):\n{err[-4000:]}")


def read_metrics(workdir: str, split: str = "train") -> list[dict]:
  """metrics.jsonl rows of `split`, without the timing fields."""
  from mobilenet_jax.train.metrics_logging import TIMING_KEYS
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if row["split"] == split:
        rows.append({k: v for k, v in row.items() if k not in TIMING_KEYS})
  return rows


def resume_overrides(data_dir: str, **extra) -> list[str]:
  """A tiny run whose train split is not a multiple of the batch: 200 images in
  batches of 32 give 6 steps per epoch and 8 images dropped per epoch (by 2 processes:
  100 each, 16 per step, 4 dropped). Augmentation on, metrics at every step, a
  checkpoint every 7 steps (never on an epoch boundary: 7, 14, 21, ...)."""
  return tiny_overrides(data_dir, **{
      "data.train_split": "train", "data.random_flip": True,
      "data.crop_area_range": "(0.25, 1.0)", "data.crop_aspect_range": "(0.75, 1.333)",
      "global_batch_size": 32, "num_train_steps": 30, "checkpoint_every_steps": 7,
      "keep_checkpoints": 2, **extra})
