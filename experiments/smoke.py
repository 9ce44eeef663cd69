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
after a few dozen steps, not ImageNet's (near chance: it does not rank the points;
--proxy=fashion_mnist does, experiments/proxy.py). The time estimate's cost model is
experiments/estimate.py.
"""

from __future__ import annotations

from . import estimate as estimate_lib
from mobilenet_jax.models.validation import MIN_RESOLUTION

SMOKE_DATASET = "shapes10"
SMOKE_TRAIN_EXAMPLES = 10_000  # shapes10/default train split.
SMOKE_EVAL_EXAMPLES = 1_000
IMAGENET_TRAIN_EXAMPLES = 1_281_167
SMALLEST_PAPER_RESOLUTION = 96  # V2's; V1's is 128.
BATCH_DIVISOR = 16
DEFAULT_IMAGES = 3840


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


def estimate(config, load_now: float | None = None) -> estimate_lib.Estimate:
  """A time estimate for training and evaluating `config` (a smoke config) here, at
  `load_now` (default: the load average now)."""
  return estimate_lib.estimate(config, config.global_batch_size * config.num_train_steps,
                               SMOKE_EVAL_EXAMPLES, SMOKE_TRAIN_EXAMPLES, load_now)


def format_estimate(estimates: list[estimate_lib.Estimate], parallel: int = 1) -> str:
  """One line: the smoke sweep's estimated wall time (experiments/estimate.py)."""
  return estimate_lib.format_estimate("Smoke", estimates, parallel)
