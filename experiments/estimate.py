"""How long a sweep's local runs take here: start-up + compilation + training +
evaluation, per point, from a cost model measured on this project's 2-core CPU.

Measured 2026-12-06, load average 6-9 (the CPU shared with other sessions):
- the Table 6 smoke sweep at --parallel=2 (V1 widths 1-0.25 at 40 px, 3,840 training
  and 2 x 1,000 evaluation images a point): 360 s with an empty compilation cache,
  220 s with a filled one, for 4 points. Start-up to the first step ~60 s a point
  (imports, dataset, init), compiling ~70 s (~10 s from the cache).
- training throughput of the trainer alone: V1 0.25 at 32 px, 2,086 images/s; from
  the smoke runs, 3.75e9 forward Mult-Adds/s per process with two running (7.5e9
  alone; a training image costs 3x its forward Mult-Adds), plus 0.14 ms per image.
- full convolutions (block=full_conv) run ~6x fewer Mult-Adds/s than separable ones
  on this CPU in training, ~3x fewer in evaluation: the Table 4 smoke point (V1 full
  conv at 40 px, 225M Mult-Adds) with 640 training images took 728 s at load 5-7,
  ~330 s of it training (2.0 images/s), ~200 s evaluating 2 x 1,000 images.
The old model (load ~12) overestimated 5-8x. Expect +-50% with the load.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

from mobilenet_jax import costs

STARTUP_S = 60.0
COMPILE_S = {"mobilenet_v1": 70.0, "mobilenet_v2": 110.0}  # V2: V1 x 250/160, as before.
COMPILE_CACHED_S = 10.0
COMPILE_PER_WORKER_S = 2.0  # vmapped virtual workers compile into a larger step.
MACS_PER_S = {"separable": 7.5e9, "full_conv": 1.3e9}  # Forward-equivalent, alone.
# Evaluation (forward only): full convolutions lose less there than in training.
EVAL_MACS_PER_S = {"separable": 7.5e9, "full_conv": 2.25e9}
SECONDS_PER_IMAGE = 0.14e-3  # Per training image, on top of the arithmetic.
EVAL_PASSES = 2  # Raw and EMA weights.
MEASURED_LOAD = "6-9"


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Seconds one point takes: start-up + compilation + training and evaluation."""
  startup_s: float
  compile_s: float
  run_s: float

  @property
  def total_s(self) -> float:
    return self.startup_s + self.compile_s + self.run_s


@functools.cache
def _mult_adds(model_items: tuple, resolution: int) -> int:
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import models  # pylint: disable=g-import-not-at-top
  model = models.create(ml_collections.ConfigDict(dict(model_items)))
  return costs.count_costs(model, resolution).mult_adds


def estimate(config, train_images: int, eval_images: int) -> Estimate:
  """The estimate for training `config` on `train_images` and evaluating it on
  `eval_images` (each pass), alone on this CPU."""
  macs = _mult_adds(tuple(sorted(config.model.to_dict().items())),
                    config.data.image_size)
  workers = config.num_workers if config.staleness else 1
  compile_s = COMPILE_S.get(config.model.name, 70.0) + COMPILE_PER_WORKER_S * workers
  if config.grad_accum_steps > 1:
    compile_s *= 1.3  # The scan over micro-batches adds a loop to compile.
  block = config.model.get("block", "separable")
  train_s = train_images * (3 * macs / MACS_PER_S[block] + SECONDS_PER_IMAGE)
  eval_s = EVAL_PASSES * eval_images * (macs / EVAL_MACS_PER_S[block]
                                        + SECONDS_PER_IMAGE / 3)
  return Estimate(STARTUP_S, compile_s, train_s + eval_s)


def wall_seconds(estimates: list[Estimate], parallel: int, cached: bool = False
                 ) -> float:
  """Wall time of the points at `parallel`: the 2 cores share the arithmetic, while
  start-up and compilation of two points overlap (more at once does not help)."""
  at_once = max(1, min(parallel, 2, len(estimates)))
  overhead = sum(e.startup_s + (COMPILE_CACHED_S if cached else e.compile_s)
                 for e in estimates)
  return overhead / at_once + sum(e.run_s for e in estimates)


def format_estimate(label: str, estimates: list[Estimate], parallel: int = 1) -> str:
  """One line: the sweep's estimated wall time, and what it is made of."""
  wall = wall_seconds(estimates, parallel)
  cached = wall_seconds(estimates, parallel, cached=True)
  compile_s = sum(e.compile_s for e in estimates)
  startup_s = sum(e.startup_s for e in estimates)
  run_s = sum(e.run_s for e in estimates)
  return (f"{label} estimate: {len(estimates)} points, ~{minutes(wall)} wall time at "
          f"--parallel={parallel} (~{minutes(cached)} with compiled programs cached; "
          f"summed over points: training and evaluation {minutes(run_s)}, compilation "
          f"{minutes(compile_s)}, process start-up {minutes(startup_s)}), from a cost "
          f"model measured on a 2-core CPU at load average {MEASURED_LOAD}; load now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (experiments/estimate.py).")


def minutes(seconds: float) -> str:
  """"42 s", "12.5 min" or "3.2 h"."""
  if seconds >= 3 * 3600:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{math.ceil(seconds)} s"
