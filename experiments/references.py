"""Released TF-slim checkpoints' accuracies (experiments/slim_checkpoints.csv) as records.

Copied from TF-slim's tables of its released checkpoints (mobilenet_v1.md and the
mobilenet README, models/research/slim/nets/mobilenet): the V1 16-model grid (widths
1/0.75/0.5/0.25 x 224/192/160/128, the points the V1 paper only plots in Figures 4
and 5; re-trained 2018_02_22 checkpoints, so 1.0-224 is 70.9% here vs 70.6% in the
paper) and the V2 22-model grid. All are 1001-class ImageNet models. Their Mult-Adds
are TF-slim's published, truncated millions: for V1 the 0.75 rows and 0.25-192 do
not match an exact count of their architecture, so plots and tables that need
exact figures count them with mobilenet_jax.costs instead.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import pathlib

SLIM_CSV = pathlib.Path(__file__).with_name("slim_checkpoints.csv")

# The grids the sweeps train. V1: the paper's Figures 4/5 (= the released grid).
# V2: every width the V2 checkpoints were released at, at every released resolution;
# TF-slim released 1.3 and 1.4 only at 224, so 8 of these 30 points have no reference.
V1_WIDTHS, V1_RESOLUTIONS = (1.0, 0.75, 0.5, 0.25), (224, 192, 160, 128)
V2_WIDTHS, V2_RESOLUTIONS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)


@dataclasses.dataclass(frozen=True)
class SlimCheckpoint:
  """One released checkpoint: ImageNet top-1/top-5 (percent) and published costs."""
  family: str  # "v1" or "v2"
  width: float
  resolution: int
  mult_adds_m_published: float
  params_m_published: float
  top1: float
  top5: float
  source: str


@functools.cache
def load_slim(path: pathlib.Path = SLIM_CSV) -> tuple[SlimCheckpoint, ...]:
  """Every released checkpoint, in the CSV's order."""
  with open(path, newline="") as f:
    return tuple(SlimCheckpoint(
        family=row["family"], width=float(row["width"]), resolution=int(row["resolution"]),
        mult_adds_m_published=float(row["mult_adds_m_published"]),
        params_m_published=float(row["params_m_published"]), top1=float(row["top1"]),
        top5=float(row["top5"]), source=row["source"]) for row in csv.DictReader(f))


def lookup(family: str, width: float, resolution: int) -> SlimCheckpoint | None:
  """The released checkpoint of that architecture, or None."""
  for row in load_slim():
    if (row.family, round(row.width, 6), row.resolution) == (
        family, round(width, 6), resolution):
      return row
  return None


def lookup_arch(arch: tuple) -> SlimCheckpoint | None:
  """The released checkpoint for a rundir.identity.architecture() tuple (full depth,
  separable blocks only: TF-slim released no shallow or full-conv MobileNet)."""
  name, width, depth, block, resolution = arch
  if depth != "full" or block != "separable":
    return None
  return lookup(name.replace("mobilenet_", ""), width, resolution)


def grid(family: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
  """(widths, resolutions) of the family's sweep grid."""
  return (V1_WIDTHS, V1_RESOLUTIONS) if family == "v1" else (V2_WIDTHS, V2_RESOLUTIONS)


# Exact Mult-Adds (millions) where TF-slim's published figure does not match a count
# (counted with mobilenet_jax.costs); every other published figure is exact (truncated).
_EXACT_MULT_ADDS_M = {("v1", 0.75, 224): 325.40, ("v1", 0.75, 192): 239.27,
                      ("v1", 0.75, 160): 166.40, ("v1", 0.75, 128): 106.77,
                      ("v1", 0.25, 192): 30.21}


def mult_adds_m(ckpt: SlimCheckpoint) -> float:
  """The checkpoint's Mult-Adds in millions: exact where the published one is off."""
  return _EXACT_MULT_ADDS_M.get((ckpt.family, ckpt.width, ckpt.resolution),
                                ckpt.mult_adds_m_published)
