"""A sweep's runs grouped into points: the seeds of one point, summarized.

Runs "v1_w1_r224", "v1_w1_r224_seed1", ... (experiments.sweeps.with_seeds) are the
seeds of point "v1_w1_r224"; their top-1 gives the point's n, mean, standard
deviation and t-based 95% confidence interval (experiments/stats.py). Seeds without
results stay attached to their point, so a table can say "3 of 5 seeds".
"""

from __future__ import annotations

import dataclasses

from . import stats, sweeps
from .results import RunResult, Unfinished


@dataclasses.dataclass(frozen=True)
class PointResult:
  """The finished seeds of one point (at least one) and its unfinished ones."""
  name: str
  runs: tuple[RunResult, ...]  # By seed.
  unfinished: tuple[Unfinished, ...] = ()

  @property
  def first(self) -> RunResult:
    return self.runs[0]

  @property
  def top1s(self) -> list[float]:
    """Each finished seed's top-1, percent."""
    return [r.top1 for r in self.runs]

  @property
  def summary(self) -> stats.Summary:
    return stats.summarize(self.top1s)

  @property
  def source(self) -> str:
    """"EMA" or "raw": whose top-1 the runs report ("EMA/raw" if they differ)."""
    return "/".join(sorted({r.results.top1[1] for r in self.runs}, reverse=True))

  @property
  def arch(self) -> tuple:
    return self.first.arch

  @property
  def point_config(self) -> dict:
    return self.first.point_config

  @property
  def comparable(self) -> bool:
    return self.first.comparable

  @property
  def stands_in(self) -> bool:
    return self.first.stands_in

  @property
  def dataset(self) -> str:
    return self.first.dataset

  @property
  def images_per_run(self) -> int:
    """Training images each seed saw: steps x global batch."""
    config = self.first.results.config
    return int(self.first.results.steps) * int(config["global_batch_size"])


def by_point(runs: list[RunResult], unfinished: list[Unfinished] = ()
             ) -> list[PointResult]:
  """The points of `runs`, in order of first appearance, each with its seeds sorted
  and the unfinished seeds of the same point."""
  groups: dict[str, list[RunResult]] = {}
  for run in runs:
    groups.setdefault(run.point, []).append(run)
  pending: dict[str, list[Unfinished]] = {}
  for item in unfinished:
    pending.setdefault(sweeps.seed_of(item.name)[0], []).append(item)
  return [PointResult(name, tuple(sorted(group, key=lambda r: sweeps.seed_of(r.name)[1])),
                      tuple(pending.get(name, ())))
          for name, group in groups.items()]


def unfinished_points(points: list[PointResult], unfinished: list[Unfinished]
                      ) -> dict[str, list[Unfinished]]:
  """{point name: its unfinished seeds} for points with no finished seed at all."""
  finished = {p.name for p in points}
  missing: dict[str, list[Unfinished]] = {}
  for item in unfinished:
    base = sweeps.seed_of(item.name)[0]
    if base not in finished:
      missing.setdefault(base, []).append(item)
  return missing
