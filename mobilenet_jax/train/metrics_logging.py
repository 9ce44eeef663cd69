"""Where training metrics go: clu writers (TensorBoard + log) and metrics.jsonl.

Only process 0 writes. metrics.jsonl holds one JSON object per line with "step" and
"split" ("train" or "eval") keys, so results can be aggregated without TensorBoard.
Timing fields (`*_per_sec`, `eta_s`) are kept apart from the numbers a resumed run
must reproduce exactly.
"""

from __future__ import annotations

import json
import os
import time

import jax
from clu import metric_writers

TIMING_KEYS = ("steps_per_sec", "images_per_sec", "eta_s")


class MetricsLogger:
  """Writes scalars to TensorBoard, the console log and WORKDIR/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.is_writer = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._writer = metric_writers.create_default_writer(
        workdir, just_logging=not self.is_writer, asynchronous=False)

  def truncate_after(self, step: int) -> None:
    """Drops lines past `step`: a resumed run rewrites what came after its checkpoint."""
    if not self.is_writer or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(kept)

  def write(self, step: int, split: str, scalars: dict) -> None:
    """Records `scalars` (plain floats) for `split` at `step`."""
    if not self.is_writer:
      return
    self._writer.write_scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()


class Progress:
  """Steps/second, images/second and ETA between two reports."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total_steps, self.batch_size = total_steps, batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()
    self.train_time = 0.0  # Seconds spent in timed intervals (after the first report).
    self.timed_steps = 0

  def report(self, step: int, count_time: bool = True) -> dict:
    """Rates since the previous report; the first interval (compilation) is not counted."""
    now = time.perf_counter()
    elapsed, steps = now - self._last_time, step - self._last_step
    self._last_step, self._last_time = step, now
    rate = steps / elapsed if elapsed > 0 else 0.0
    if count_time:
      self.train_time += elapsed
      self.timed_steps += steps
    return {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size,
            "eta_s": (self.total_steps - step) / rate if rate else 0.0}

  def pause(self) -> None:
    """Excludes what follows (evaluation, checkpointing) from the next interval."""
    self._pause_start = time.perf_counter()

  def resume(self) -> None:
    self._last_time += time.perf_counter() - self._pause_start

  @property
  def images_per_sec(self) -> float:
    """Steady-state training throughput over the timed intervals."""
    return self.timed_steps * self.batch_size / self.train_time if self.train_time else 0.0
