"""Where training metrics go: TensorBoard (clu), metrics.jsonl and one console line.

Only process 0 writes. metrics.jsonl holds one JSON object per line with "step" and
"split" ("train" or "eval") keys, so results can be aggregated without TensorBoard.
Timing fields (`*_per_sec`, `eta_s`) are kept apart from the numbers a resumed run
must reproduce exactly. The console gets one line per log interval (`ProgressLine`),
not the scalars again: clu's LoggingWriter would print every metric a second time.
"""

from __future__ import annotations

import contextlib
import sys
import time

import jax
from clu import metric_writers

from mobilenet_jax.rundir import metrics_file

TIMING_KEYS = ("steps_per_sec", "images_per_sec", "eta_s")


class MetricsLogger:
  """Writes scalars to TensorBoard, the console log and WORKDIR/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.is_writer = jax.process_index() == 0
    self._workdir = workdir
    # TensorBoard only (not create_default_writer's extra LoggingWriter).
    self._writer = metric_writers.SummaryWriter(workdir) if self.is_writer else None

  def truncate_after(self, step: int) -> None:
    """Drops rows past `step`: a resumed run rewrites what came after its checkpoint."""
    if self.is_writer:
      metrics_file.keep_through(self._workdir, step)

  def write(self, step: int, split: str, scalars: dict) -> None:
    """Records `scalars` (plain floats) for `split` at `step`."""
    if not self.is_writer:
      return
    self._writer.write_scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
    metrics_file.append_row(self._workdir, {"step": step, "split": split, **scalars})

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


class Progress:
  """Steps/second, images/second and ETA between two reports.

  The clock starts at `start_timing` (the trainer calls it once the first step, which
  includes compilation, has finished), so every rate, also of a run shorter than one
  log interval, is a training rate.
  """

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total_steps, self.batch_size = total_steps, batch_size
    self._last_step, self._last_time = start_step, None
    self.train_time = 0.0  # Seconds spent in timed steps.
    self.timed_steps = 0

  def start_timing(self, step: int) -> None:
    """Steps after `step` are timed from now."""
    self._last_step, self._last_time = step, time.perf_counter()

  def report(self, step: int) -> dict:
    """Rates over the timed steps since the previous report."""
    now = time.perf_counter()
    if self._last_time is None:
      self.start_timing(step)
      return {"steps_per_sec": 0.0, "images_per_sec": 0.0, "eta_s": 0.0}
    elapsed, steps = now - self._last_time, step - self._last_step
    self._last_step, self._last_time = step, now
    self.train_time += elapsed
    self.timed_steps += steps
    # Over all timed steps so far: steadier than one interval's rate.
    rate = self.timed_steps / self.train_time if self.train_time > 0 else 0.0
    return {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size,
            "eta_s": (self.total_steps - step) / rate if rate else 0.0}

  @contextlib.contextmanager
  def paused(self):
    """Excludes the time spent inside (evaluation, checkpointing) from the rates."""
    pause_start = time.perf_counter()
    try:
      yield
    finally:
      if self._last_time is not None:
        self._last_time += time.perf_counter() - pause_start

  @property
  def images_per_sec(self) -> float:
    """Steady-state training throughput over the timed steps."""
    return self.timed_steps * self.batch_size / self.train_time if self.train_time else 0.0


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
          else f"{rest // 60}:{rest % 60:02d}")


class ProgressLine:
  """The console's one line per log interval (process 0 only).

  A progress bar redrawn in place when stdout is a terminal; plain lines otherwise
  (log files, pipes), so no escape codes end up in logs.
  """

  def __init__(self, total_steps: int, stream=None):
    self.total_steps = total_steps
    self.stream = stream or sys.stdout
    self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.enabled = jax.process_index() == 0
    self._open = False  # A bar is drawn and not yet ended by a newline.

  def format(self, step: int, scalars: dict, rates: dict) -> str:
    rate = rates.get("images_per_sec", 0.0)
    eta = _duration(rates["eta_s"]) if rate else "-"
    return (f"step {step}/{self.total_steps}  loss {scalars['loss']:.4f}  "
            f"top-1 {scalars['top1']:.4f}  lr {scalars['learning_rate']:.4g}  "
            f"{rate:.0f} img/s  ETA {eta}")

  def update(self, step: int, scalars: dict, rates: dict) -> None:
    """Shows the interval that ended at `step`."""
    if not self.enabled:
      return
    text = self.format(step, scalars, rates)
    if self.is_tty:
      width = 20
      done = int(width * step / max(1, self.total_steps))
      self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}\033[K")
      self._open = True
      if step >= self.total_steps:
        self.end()
    else:
      self.stream.write(text + "\n")
    self.stream.flush()

  def message(self, text: str) -> None:
    """A line of its own (evaluation results), below the bar."""
    if not self.enabled:
      return
    self.end()
    self.stream.write(text + "\n")
    self.stream.flush()

  def end(self) -> None:
    if self._open:
      self.stream.write("\n")
      self._open = False
