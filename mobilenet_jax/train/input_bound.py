"""Input-bound or not: the input pipeline's rate against the train step's, per host.

At the start of a run `FeedCheck` times the run's own first batches twice, at no cost
to the run: first the pipeline alone (it pulls a few batches ahead and keeps them),
then the step alone (the loop trains on the kept batches, so no step waits for
input). The run trains on exactly the batches it would have had. Whichever rate is
lower bounds the run; the trainer prints the verdict and stores it in results.json.
The data benchmark (`python -m mobilenet_jax.data.benchmark`) gives the same verdict
from its own measurements.

Few batches are timed (at most about `max_seconds` of pipeline work), so the figures
are rough, and the pipeline may have had a batch or two ready before the clock
started (it is then overrated). On the CPU platform the step and the pipeline share
the host's cores: measured apart, each had them all, and the run is slower than both.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Iterator


@dataclasses.dataclass(frozen=True)
class InputBound:
  """Per-host images/second of the pipeline and of the step, and which is lower."""
  pipeline_images_per_sec: float
  step_images_per_sec: float
  batches_timed: int
  steps_timed: int
  platform: str = ""

  @property
  def bound(self) -> str:
    """"input" when the pipeline is slower than the step, else "step"."""
    return "input" if self.pipeline_images_per_sec < self.step_images_per_sec else "step"

  def line(self) -> str:
    """One console line: both rates and the verdict."""
    pipe, step = self.pipeline_images_per_sec, self.step_images_per_sec
    if self.bound == "input":
      verdict = f"input-bound (the pipeline feeds {pipe / step:.0%} of the step's rate)"
    else:
      verdict = f"step-bound (the pipeline could feed {pipe / step:.1f}x the step)"
    note = "; on CPU both share the cores" if self.platform == "cpu" else ""
    timed = (f"{self.steps_timed} batches" if self.batches_timed == self.steps_timed
             else f"{self.batches_timed} batches / {self.steps_timed} steps")
    return (f"input pipeline {pipe:,.0f} images/s, train step {step:,.0f} images/s per "
            f"host, measured apart over {timed}: {verdict}{note}")

  def to_json(self) -> dict:
    """The results.json record."""
    return {**dataclasses.asdict(self), "bound": self.bound}


def verdict(pipeline_images_per_sec: float, step_images_per_sec: float,
            batches_timed: int, steps_timed: int, platform: str = "") -> InputBound:
  """The comparison for rates measured elsewhere (the data benchmark)."""
  return InputBound(pipeline_images_per_sec, step_images_per_sec, batches_timed,
                    steps_timed, platform)


def _nbytes(batch) -> int:
  return sum(getattr(v, "nbytes", 0) for v in batch.values())


class FeedCheck:
  """Times the pipeline, then the step, on a run's first batches (module doc).

  Use: `batches = check.wrap(batches, steps_to_run)`, then after each step
  `check.after_step(steps_done, metrics)`; it returns the `InputBound` once, when the
  kept batches are used up, and `result` holds it afterwards (None if the run was too
  short to measure).
  """

  def __init__(self, local_batch_size: int, platform: str = "", max_batches: int = 10,
               max_seconds: float = 2.0, max_bytes: int = 2 << 30):
    self.local_batch_size, self.platform = local_batch_size, platform
    self.max_batches, self.max_seconds, self.max_bytes = (max_batches, max_seconds,
                                                          max_bytes)
    self.result: InputBound | None = None
    self._kept = 0  # Batches pulled ahead: the steps that train on them are timed.
    self._pipeline_rate = 0.0
    self._step_start = None

  def wrap(self, batches: Iterator[dict], steps_to_run: int) -> Iterator[dict]:
    """`batches`, with its first few pulled (and the pull timed) now."""
    # One untimed batch (the pipeline's start, shuffle buffer included), then at
    # least two timed; the first step compiles, so at least three steps are needed.
    if steps_to_run < 3:
      return batches
    kept = [next(batches)]
    start, size = time.perf_counter(), _nbytes(kept[0])
    while len(kept) < min(self.max_batches, steps_to_run):
      kept.append(next(batches))
      if len(kept) >= 3 and (time.perf_counter() - start > self.max_seconds
                             or size * len(kept) > self.max_bytes):
        break
    elapsed = time.perf_counter() - start
    timed = len(kept) - 1
    self._pipeline_rate = timed * self.local_batch_size / max(elapsed, 1e-9)
    self._kept = len(kept)
    return itertools.chain(kept, batches)

  def after_step(self, steps_done: int, metrics: Any) -> InputBound | None:
    """Call after each step (1 = the run's first); the verdict once it is measured."""
    if not self._kept or steps_done > self._kept:
      return None
    import jax  # pylint: disable=g-import-not-at-top
    if steps_done == 1:  # Compiled: time the steps on the other kept batches.
      jax.block_until_ready(metrics)
      self._step_start = time.perf_counter()
      return None
    if steps_done < self._kept:
      return None
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - self._step_start
    steps = self._kept - 1
    self.result = InputBound(self._pipeline_rate,
                             steps * self.local_batch_size / max(elapsed, 1e-9),
                             batches_timed=steps, steps_timed=steps,
                             platform=self.platform)
    return self.result
