"""How long a sweep's local runs take here: start-up + compilation + training +
evaluation, per point, from a cost model measured on this project's 2-core CPU.

All of it is CPU-bound, and the CPU is shared: the model's seconds are those at a load
average of 6 (counting our own runs), scaled by `load_factor` to the load now plus
the ~2 cores our runs take. Fitted (2026-12-06) to measurements here, each
within 1.45x of its estimate at its own load:
- the Table 6 smoke sweep at --parallel=2 (V1 widths 1-0.25 at 40 px, 3,840 training
  and 2 x 1,000 evaluation images a point): 360 s with an empty compilation cache
  (load ~8), 220 s with a filled one (load ~9);
- the Table 4 full-convolution smoke point (225M Mult-Adds at 40 px), 640 training
  images: 728 s alone (load ~5.5, 2.0 images/s) while XLA:CPU computed its
  convolutions; as products over patches (models/kernels/spatial_conv.py) V1 1.0
  full-conv at 32 px (99M Mult-Adds) trains at 241 images/s (load ~3.5) against
  separable's (12M) 490 at load ~7: about separable's cost per Mult-Add;
- the Table 5 proxy, 2 seeds of 0.5 epochs at 32 px, --parallel=2: 230 s (load 5-9);
- the trainer alone on Fashion-MNIST, batch 128: V1 1.0 at 32 px 455 images/s, at
  56 px 213, V1 0.25 at 32 px 2,086.
The old model (load ~12, no per-step cost) overestimated 5-8x. Expect +-50%.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

from mobilenet_jax import costs

CALIBRATION_LOAD = 6.0  # Load average (ours included) the constants below hold at.
OWN_LOAD = 2.0  # What our runs add to the load average: the 2 cores.
CORES = 2  # Of the machine measured.
STARTUP_S = 30.0  # Imports, dataset, init.
COMPILE_S = {"mobilenet_v1": 55.0, "mobilenet_v2": 86.0}  # V2: V1 x 250/160, as before.
COMPILE_CACHED_S = 10.0
COMPILE_PER_WORKER_S = 2.0  # vmapped virtual workers compile into a larger step.
# Training seconds per image per million forward Mult-Adds (full convolutions as
# products over patches: models/kernels/spatial_conv.py).
TRAIN_S_PER_MMAC = {"separable": 0.08e-3, "full_conv": 0.065e-3}
EVAL_FRACTION = {"separable": 1 / 3, "full_conv": 1 / 3}  # Of a training image's.
SECONDS_PER_IMAGE = 0.1e-3  # Per training image, on top of the arithmetic.
SECONDS_PER_STEP = 0.04
SECONDS_PER_CACHED_IMAGE = 0.2e-3  # Decoding the train split into the cache.
EVAL_PASSES = 2  # Raw and EMA weights.


def load_factor(load_now: float | None = None) -> float:
  """How much slower than at CALIBRATION_LOAD runs go with `load_now` (other work's
  load average, default: now) plus ours."""
  if load_now is None:
    load_now = os.getloadavg()[0]
  return max(CORES, load_now + OWN_LOAD) / CALIBRATION_LOAD


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Seconds one point takes: start-up + compilation + training and evaluation."""
  startup_s: float
  compile_s: float
  run_s: float
  compile_cached_s: float = 0.0  # Compiling with the programs in the cache.

  @property
  def total_s(self) -> float:
    return self.startup_s + self.compile_s + self.run_s


@functools.cache
def _mult_adds(model_items: tuple, resolution: int) -> int:
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import models  # pylint: disable=g-import-not-at-top
  model = models.create(ml_collections.ConfigDict(dict(model_items)))
  return costs.count_costs(model, resolution).mult_adds


def estimate(config, train_images: int, eval_images: int, cached_images: int = 0,
             load_now: float | None = None) -> Estimate:
  """The estimate for training `config` on `train_images`, evaluating it on
  `eval_images` (each pass) and decoding `cached_images` into the data cache, here
  at `load_now` (default: the load average now)."""
  factor = load_factor(load_now)
  macs_m = _mult_adds(tuple(sorted(config.model.to_dict().items())),
                      config.data.image_size) / 1e6
  workers = config.num_workers if config.staleness else 1
  compile_s = COMPILE_S.get(config.model.name, 55.0) + COMPILE_PER_WORKER_S * workers
  if config.grad_accum_steps > 1:
    compile_s *= 1.3  # The scan over micro-batches adds a loop to compile.
  block = config.model.get("block", "separable")
  per_image = macs_m * TRAIN_S_PER_MMAC[block]
  train_s = (train_images / config.global_batch_size * SECONDS_PER_STEP
             + train_images * (per_image + SECONDS_PER_IMAGE))
  eval_s = EVAL_PASSES * eval_images * (per_image * EVAL_FRACTION[block]
                                        + SECONDS_PER_IMAGE / 3)
  run_s = train_s + eval_s + cached_images * SECONDS_PER_CACHED_IMAGE
  return Estimate(STARTUP_S * factor, compile_s * factor, run_s * factor,
                  COMPILE_CACHED_S * factor)


def wall_seconds(estimates: list[Estimate], parallel: int, cached: bool = False
                 ) -> float:
  """Wall time of the points at `parallel`: the 2 cores share the arithmetic, while
  start-up and compilation of two points overlap (more at once does not help)."""
  at_once = max(1, min(parallel, 2, len(estimates)))
  overhead = sum(e.startup_s + (e.compile_cached_s if cached else e.compile_s)
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
          f"{minutes(compile_s)}, process start-up {minutes(startup_s)}), at the load "
          f"average now, {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, plus ours; "
          "+-50% (experiments/estimate.py).")


def minutes(seconds: float) -> str:
  """"42 s", "12.5 min" or "3.2 h"."""
  if seconds >= 3 * 3600:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{math.ceil(seconds)} s"
