"""Local smoke mode: every point of a sweep, scaled down to run on a CPU in minutes.

Unlike the configs' `runlocal` argument (width <= 0.25 at 32x32: every Table 6 point
the same network), smoke mode keeps what makes the points differ: width, depth, block,
resolution *ratios* and every recipe setting stay; only these shrink, as extra
`--config.*` overrides after the point's own:

  data         the built-in shapes10 (10 classes, 10,000 train / 2,000 test images)
  resolution   32 + (r - 96) / 16 (224 -> 40, 192 -> 38, 160 -> 36, 128 -> 34,
               96 -> 32): every paper resolution distinct, in the paper's order, and
               at least the 32 px the models accept, at most 1.6x the cost of 32 px
  batch        / 16 (1024 -> 64, 16384 -> 1024), accumulation steps and workers kept
  steps        a budget of `images` training images (default 3840) per point
  schedule     warmup epochs scaled with the run, so warmup keeps its share of it; the
               decay keeps its period in (shapes10) epochs, so the few hundred steps
               train near the peak rate instead of decaying a 300-epoch schedule
  evaluation   the first 1,000 test images
  BatchNorm    momentum at most 1 - 10 / steps, so the running statistics that
               evaluation uses have seen the short run (V1's 0.9997 would not have)

It checks the plumbing and shows the sweep's shape; the accuracies are shapes10's
after a few hundred steps, not ImageNet's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

from mobilenet_jax import costs
from mobilenet_jax.models.validation import MIN_RESOLUTION

SMOKE_DATASET = "shapes10"
SMOKE_TRAIN_EXAMPLES = 10_000  # shapes10/default train split.
SMOKE_EVAL_EXAMPLES = 1_000
IMAGENET_TRAIN_EXAMPLES = 1_281_167
SMALLEST_PAPER_RESOLUTION = 96  # V2's; V1's is 128.
BATCH_DIVISOR = 16
DEFAULT_IMAGES = 3840

# Cost model for the estimate, per point, measured here (2026-12-01) on a 2-core CPU
# shared with other work (load average ~12), two points at a time (--parallel=2): the
# Table 6 smoke sweep, V1 at 32x32, batch 64. Process start (JAX and TensorFlow
# imports, dataset open, init) ~95 s, compiling the train and eval steps ~160 s
# (nearly independent of the width), then ~1.4 GMAC/s of training and evaluation
# arithmetic. An idle machine is several times faster; the estimate says so.
STARTUP_S = 95.0
COMPILE_S = {"mobilenet_v1": 160.0, "mobilenet_v2": 250.0}
COMPILE_PER_WORKER_S = 2.0  # vmapped virtual workers compile into a larger step.
MACS_PER_S = 1.4e9
MEASURED_LOAD = 12.0


def smoke_overrides(config, images: int = DEFAULT_IMAGES) -> list[tuple[str, object]]:
  """The overrides that shrink `config` (a point's full config) to a smoke run."""
  unit = config.num_workers * config.grad_accum_steps  # The batch must split evenly.
  batch = max(unit, config.global_batch_size // BATCH_DIVISOR // unit * unit)
  steps = max(4, int(round(images / batch)))
  real_epochs = config.num_epochs
  smoke_epochs = steps * batch / SMOKE_TRAIN_EXAMPLES
  share = smoke_epochs / real_epochs  # Epoch-valued settings keep their share of the run.
  # An unset bn_momentum is chosen from the (short) run length by the trainer.
  momentum = config.model.bn_momentum
  bn = ([] if momentum is None else
        [("model.bn_momentum", round(min(momentum, 1.0 - 10.0 / steps), 4))])
  return bn + [
      ("data.name", SMOKE_DATASET), ("data.train_split", "train"),
      ("data.eval_split", f"test[:{SMOKE_EVAL_EXAMPLES}]"), ("data.cache", True),
      ("data.shuffle_buffer", SMOKE_TRAIN_EXAMPLES),
      ("data.image_size", smoke_resolution(config.data.image_size)),
      ("model.num_classes", 10),
      ("global_batch_size", batch), ("num_train_steps", steps),
      ("num_epochs", _round(smoke_epochs)),
      ("lr.warmup_epochs", _round(config.lr.warmup_epochs * share)),
      ("eval_batch_size", 500), ("eval_every_steps", 0),
      ("log_every_steps", max(1, steps // 20)),
      ("checkpoint_every_steps", max(1, steps // 2)), ("keep_checkpoints", 2),
  ]


def _round(x: float) -> float:
  return float(f"{x:.4g}")


def smoke_resolution(resolution: int) -> int:
  """The scaled-down input size: distinct for every resolution the sweeps use (all
  multiples of 16 from 96 to 224), never below the models' minimum. A scale factor
  cannot do both: one that keeps 96 at 32 px puts 224 at 75 px (5.5x the work)."""
  return max(MIN_RESOLUTION, MIN_RESOLUTION + int(round(
      (resolution - SMALLEST_PAPER_RESOLUTION) / 16)))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Seconds one smoke point takes: startup + compile + train + eval."""
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


def estimate(config) -> Estimate:
  """A time estimate for training and evaluating `config` (a smoke config) here."""
  macs = _mult_adds(tuple(sorted(config.model.to_dict().items())),
                    config.data.image_size)
  workers = config.num_workers if config.staleness else 1
  compile_s = COMPILE_S.get(config.model.name, 40.0) + COMPILE_PER_WORKER_S * workers
  if config.grad_accum_steps > 1:
    compile_s *= 1.3  # The scan over micro-batches adds a loop to compile.
  train_macs = 3 * macs * config.global_batch_size * config.num_train_steps
  eval_macs = 2 * macs * SMOKE_EVAL_EXAMPLES  # Raw and EMA weights.
  return Estimate(STARTUP_S, compile_s, (train_macs + eval_macs) / MACS_PER_S)


def format_estimate(estimates: list[Estimate], parallel: int = 1) -> str:
  """One line: the sweep's estimated wall time, and how much of it is compilation."""
  total = sum(e.total_s for e in estimates)
  compile_s = sum(e.compile_s for e in estimates)
  # Measured with two points at a time on 2 cores: more at once does not go faster.
  wall = total / max(1, min(parallel, 2, len(estimates)))
  startup_s = sum(e.startup_s for e in estimates)
  return (f"Smoke estimate: {len(estimates)} points, ~{_minutes(wall)} wall time at "
          f"--parallel={parallel} ({_minutes(total)} summed over points: compilation "
          f"{_minutes(compile_s)}, process start-up {_minutes(startup_s)}, training and "
          f"evaluation {_minutes(total - compile_s - startup_s)}), from a cost model "
          f"measured on a 2-core CPU at load average ~{MEASURED_LOAD:.0f}; load now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (experiments/smoke.py).")


def _minutes(seconds: float) -> str:
  return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{math.ceil(seconds)} s"
