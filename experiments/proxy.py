"""Proxy scale: a paper sweep trained on a small real dataset (--proxy=fashion_mnist).

Smoke mode (experiments/smoke.py) proves the plumbing; a proxy tests the paper's
findings. Every point keeps what the paper varies (model family, width, depth, block,
and resolution, mapped below) and trains with configs/small_images.py (SGD, cosine
decay, pad-and-crop augmentation; the ImageNet recipe and crops do not suit 28 px
images) on the proxy dataset for the same number of epochs as every other point of
the sweep. A proxy point keeps its paper point's name, and the launcher's manifest
records the paper point it stands for, so `compare` puts it on the paper's row.

Resolutions. The proxy's resolution of a point is the paper's times
32 / (the smallest resolution in the sweep), rounded:

  V1 Table 7 and grid (224, 192, 160, 128)  -> 56, 48, 40, 32: x 1/4, exact
  V2 grid (224, 192, 160, 128, 96)          -> 75, 64, 53, 43, 32: x 1/3
  Tables 4, 5, 6 (224 only)                 -> 32

Why: a common factor keeps every ratio between the sweep's resolutions (the paper's
rho), keeps the points distinct and in order, and
puts the smallest at 32 px, the least the models accept (five stride-2 stages). A
sweep that does not vary resolution runs at 32 px, the cheapest size: Fashion-MNIST's
28 px images hold no more detail at 56 px, and a full-convolution V1 (Table 4) has
8.6x the separable one's Mult-Adds. Mult-Adds do not fall exactly as rho^2 on the proxy:
48 and 40 px are not multiples of the net's stride 32, so their last maps round up (2x2,
as at 56 px): V1 1.0 costs 42.5 / 28.9 / 26.0 / 11.6 M at 56 / 48 / 40 / 32 px, against
the 42.5 / 31.2 / 21.7 / 13.9 M of rho^2 (Figures 4/5 use each point's own count).
So one paper point may train at two sizes in two sweeps (1.0 MobileNet-224: 32 px in
Table 6, 56 px in Table 7); each sweep compares within itself.

Epochs (`EPOCHS`): one budget per sweep, the same for all its points (the points are
ranked after equal training, not after convergence), sized so that three seeds
(--seeds=3 --parallel=2) of a table take well under an hour on this project's 2-core
CPU. Measured 2026-12-06 on that CPU at load 5-9 (other runs beside the study):
table6 (1.5 epochs) 22 min, table7 (0.75) 35 min, table4 (1; full convolutions as
products over patches, models/kernels/spatial_conv.py) 24 min, table5 (3) 19 min;
estimated by the launcher at load ~6: grid (0.5) ~1.9 h, v2grid (0.25) ~3.7 h
(30 points x 3 seeds: mostly start-up and compilation). Such short budgets rank how fast the
points learn as much as where they end: at 1.5 epochs the four widths of Table 6 are
within 2.3 points of each other and their order is not significant (README).
`-- --config.num_epochs=N` changes the budget.
"""

from __future__ import annotations

import dataclasses

from . import estimate, sweeps
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models.validation import MIN_RESOLUTION

CONFIG_FILE = "small_images.py"


@dataclasses.dataclass(frozen=True)
class Proxy:
  """A small dataset the paper sweeps can be mapped onto (a prepared TFDS dataset)."""
  dataset: str
  num_classes: int
  train_examples: int
  eval_examples: int
  chance_top1: float  # Percent: one class in num_classes, balanced test split.


PROXIES = {"fashion_mnist": Proxy("fashion_mnist", 10, 60_000, 10_000, 10.0)}

# Epochs per sweep (see the module doc); others get DEFAULT_EPOCHS.
EPOCHS = {"table4": 1.0, "table5": 3.0, "table6": 1.5, "table7": 0.75, "grid": 0.5,
          "v2grid": 0.25}
DEFAULT_EPOCHS = 1.0


def get_proxy(name: str) -> Proxy:
  """The proxy `name`; ConfigError listing the known ones."""
  if name not in PROXIES:
    raise ConfigError(f"Unknown proxy {name!r}; known proxies: {', '.join(PROXIES)}.")
  return PROXIES[name]


def resolution_scale(resolutions) -> float:
  """The factor that puts the smallest of `resolutions` at the models' minimum."""
  return MIN_RESOLUTION / min(resolutions)


def proxy_points(sweep: sweeps.Sweep, proxy_name: str,
                 epochs: float | None = None) -> tuple[sweeps.Point, ...]:
  """The points of `sweep` as proxy points (each with `full_size` = the paper point).

  Raises:
    ConfigError: for a recipe sweep (its settings belong to the ImageNet recipe), or
      an unknown proxy.
  """
  proxy = get_proxy(proxy_name)
  if sweep.kind != "architecture":
    raise ConfigError(f"--proxy maps architecture sweeps (table4, table5, table6, "
                     f"table7, grid, v2grid, ...); {sweep.name} is a {sweep.kind} sweep "
                     "of the ImageNet recipe.")
  archs = {p.name: run_identity.architecture(p.build()) for p in sweep.points}
  scale = resolution_scale({arch[4] for arch in archs.values()})
  epochs = EPOCHS.get(sweep.name, DEFAULT_EPOCHS) if epochs is None else epochs
  return tuple(
      sweeps.Point(point.name, proxy_spec(archs[point.name], scale, proxy, epochs),
                   (), full_size=point)
      for point in sweep.points)


def proxy_spec(arch: tuple, scale: float, proxy: Proxy, epochs: float) -> str:
  """configs/small_images.py's argument string for an architecture tuple."""
  name, width, depth, block, resolution = arch
  args = [f"model={name.replace('mobilenet_', '')}", f"width={width:g}",
          f"res={int(round(resolution * scale))}"]
  args += [f"depth={depth}"] if depth != "full" else []
  args += [f"block={block}"] if block != "separable" else []
  args += [f"dataset={proxy.dataset}", f"num_classes={proxy.num_classes}",
           f"epochs={epochs:g}"]
  return f"{CONFIG_FILE}:{','.join(args)}"


def format_estimate(jobs, proxy_name: str, parallel: int) -> str:
  """One line: the estimated wall time of training `jobs` (launch.Job) here."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  proxy = get_proxy(proxy_name)
  estimates = []
  for job in jobs:
    config = _with_budget_args(ml_collections.ConfigDict(job.full_config), job.args)
    images = (config.num_train_steps * config.global_batch_size
              if config.num_train_steps > 0
              else int(config.num_epochs * proxy.train_examples))
    estimates.append(estimate.estimate(config, images, proxy.eval_examples,
                                       proxy.train_examples))
  return estimate.format_estimate(f"Proxy ({proxy_name})", estimates, parallel)


_BUDGET_KEYS = ("num_epochs", "num_train_steps", "global_batch_size")


def _with_budget_args(config, args):
  """`config` with the `--config.KEY=VALUE` arguments that size the run applied (the
  user's, after "--", are in a job's args but not in its full config)."""
  for arg in args:
    key, _, value = arg[len("--config."):].partition("=")
    if arg.startswith("--config.") and key in _BUDGET_KEYS:
      config[key] = type(config[key])(float(value))
  return config
