"""The V1 paper's ablation findings, checked against a sweep's results.

Each claim a sweep's points can test is stated with the paper's figures, our
evidence and a verdict:

  V1 Table 4   full convolutions beat depthwise separable ones (71.7 vs 70.6, for
               8.6x the Mult-Adds)                            Welch's t-test
  V1 Table 5   thinner beats shallower at similar cost (0.75 MobileNet 68.4 vs
               Shallow MobileNet 65.3)                        Welch's t-test
  V1 Table 6   accuracy falls smoothly as width shrinks       slope test + Welch
  V1 Table 7   accuracy falls smoothly as resolution shrinks  slope test + Welch
  Figures 4/5  accuracy is roughly log-linear in Mult-Adds    slope test, R^2

Verdicts, every test two-sided at 5% (experiments/stats.py):
- "holds": the difference (or slope) has the paper's sign and is significant, with
  no significant step against it (a narrower or smaller point significantly better
  than its neighbour) and, for log-linearity, R^2 >= 0.8 over the point means (the
  released V1 and V2 grids' own R^2 is 0.97);
- "does not hold": significant the other way, a significant step against it, or a
  significant trend that is not log-linear (R^2 < 0.8);
- "not significant": neither;
- "not testable": too few seeds (Welch needs 2 per point) or points, or a point
  still at chance level (within 5 points of it: smoke runs do not learn).
"""

from __future__ import annotations

import dataclasses
import math
from . import paper, stats
from .aggregate import PointResult

HOLDS, FAILS, NOT_SIGNIFICANT, NOT_TESTABLE = (
    "holds", "does not hold", "not significant", "not testable")
MIN_R2 = 0.8


@dataclasses.dataclass(frozen=True)
class Claim:
  """One paper claim next to our evidence."""
  source: str  # "V1 Table 4"
  statement: str
  paper: str  # The paper's figures.
  ours: str  # Our point means (± 95% CI) and what else the claim needs.
  statistic: str
  verdict: str
  points: tuple[PointResult, ...] = ()  # The points it compares.


def check_claims(points: list[PointResult]) -> list[Claim]:
  """Every claim the points can test, in the paper's order."""
  by_arch = {}
  for point in points:
    by_arch.setdefault(point.arch, point)
  checks = (_table4, _table5, _table6, _table7, _figure4)
  return [_unless_at_chance(claim) for check in checks for claim in check(by_arch)]


AT_CHANCE_MARGIN = 5.0  # Points above chance a mean must reach to count as learned.


def _unless_at_chance(claim: Claim) -> Claim:
  """"not testable" when a point the claim names did not learn (mean top-1 within
  AT_CHANCE_MARGIN of chance): a ranking of untrained networks is noise (smoke runs)."""
  stuck = [p.name for p in claim.points
           if p.summary.mean < 100.0 / p.first.num_classes + AT_CHANCE_MARGIN]
  if not stuck:
    return claim
  return dataclasses.replace(
      claim, verdict=NOT_TESTABLE,
      statistic=f"{', '.join(stuck)} at chance level (mean top-1 within "
                f"{AT_CHANCE_MARGIN:g} points of it): train longer. " + claim.statistic)


def _paper_rows(table: str) -> list[paper.PaperResult]:
  return [r for r in paper.load_paper_results()
          if (r.paper, r.table) == ("v1", table) and r.is_mobilenet]


def _two_point_verdict(test: stats.TTest | None) -> str:
  if test is None:
    return NOT_TESTABLE
  if not test.significant:
    return NOT_SIGNIFICANT
  return HOLDS if test.estimate > 0 else FAILS


def _pair_claim(source, statement, paper_text, better: PointResult, worse: PointResult,
                extra: str = "") -> Claim:
  test = stats.welch(better.top1s, worse.top1s)
  ours = (f"{better.name} {better.summary.text(2)} vs {worse.name} "
          f"{worse.summary.text(2)} (n = {better.summary.n}, {worse.summary.n}){extra}")
  statistic = ("Welch's t-test: " + test.text("difference")) if test else (
      "Welch's t-test needs 2+ seeds of each point")
  return Claim(source, statement, paper_text, ours, statistic, _two_point_verdict(test),
               (better, worse))


def _table4(by_arch) -> list[Claim]:
  for arch, full in sorted(by_arch.items(), key=lambda kv: (-kv[0][1], -kv[0][4])):
    if arch[3] != "full_conv":
      continue
    separable = by_arch.get((*arch[:3], "separable", arch[4]))
    if separable is None:
      continue
    rows = _paper_rows("4")
    ratio = full.first.results.mult_adds / separable.first.results.mult_adds
    return [_pair_claim(
        "V1 Table 4", "full convolutions beat depthwise separable ones, for many times "
        "the Mult-Adds",
        f"{rows[0].top1} vs {rows[1].top1} (+{rows[0].top1 - rows[1].top1:.1f}), "
        f"{rows[0].mult_adds_m / rows[1].mult_adds_m:.1f}x the Mult-Adds", full,
        separable, f"; {ratio:.1f}x the Mult-Adds")]
  return []


def _table5(by_arch) -> list[Claim]:
  for arch, thin in sorted(by_arch.items(), key=lambda kv: -kv[0][4]):
    if arch[1:4] != (0.75, "full", "separable"):
      continue
    shallow = by_arch.get((arch[0], 1.0, "shallow", "separable", arch[4]))
    if shallow is None:
      continue
    rows = _paper_rows("5")
    return [_pair_claim(
        "V1 Table 5", "thinner beats shallower at similar cost",
        f"{rows[0].top1} vs {rows[1].top1} ({rows[0].mult_adds_m:g}M vs "
        f"{rows[1].mult_adds_m:g}M Mult-Adds)", thin, shallow)]
  return []


def _table6(by_arch) -> list[Claim]:
  return _trend(by_arch, "6", "width", 1, 4, "accuracy falls smoothly as width shrinks")


def _table7(by_arch) -> list[Claim]:
  return _trend(by_arch, "7", "resolution", 4, 1,
                "accuracy falls smoothly as resolution shrinks")


def _trend(by_arch, table: str, what: str, axis: int, fixed: int,
           statement: str) -> list[Claim]:
  """Table 6 (axis 1: width, at one resolution) or 7 (axis 4: resolution, at one
  width): the line with the most points, at the largest fixed value on a tie."""
  lines: dict[tuple, list[PointResult]] = {}
  for arch, point in by_arch.items():
    if arch[2:4] == ("full", "separable"):
      lines.setdefault((arch[0], arch[fixed]), []).append(point)
  if not lines:
    return []
  key, line = max(lines.items(), key=lambda kv: (len(kv[1]), kv[0][1]))
  if len(line) < 3:
    return []
  line.sort(key=lambda p: -p.arch[axis])
  x = [math.log2(p.arch[axis]) for p in line for _ in p.top1s]
  y = [v for p in line for v in p.top1s]
  fit = stats.fit_line(x, y) if len(set(x)) > 1 else None
  steps = [(a, b, stats.welch(a.top1s, b.top1s)) for a, b in zip(line, line[1:])]
  against = [s for s in steps if s[2] and s[2].significant and s[2].estimate < 0]
  if fit is None or fit.test is None:
    verdict = NOT_TESTABLE
  elif against or (fit.test.significant and fit.slope < 0):
    verdict = FAILS
  else:
    verdict = HOLDS if fit.test.significant else NOT_SIGNIFICANT
  label = (lambda p: f"{p.arch[axis]:g}")
  ours = ", ".join(f"{label(p)}: {p.summary.text(2)}" for p in line)
  step_text = "; ".join(
      f"{label(a)}->{label(b)} {t.estimate:+.2f} (p = {stats.p_text(t.p)})"
      if t else f"{label(a)}->{label(b)} n/a" for a, b, t in steps)
  statistic = "too few runs for a slope" if fit is None or fit.test is None else (
      f"least squares over {len(y)} runs: {fit.slope:+.2f} points per doubling of "
      f"{what}, t = {fit.test.t:.2f}, df = {fit.test.df:.0f}, p = "
      f"{stats.p_text(fit.test.p)}; Welch, each step down: {step_text}")
  rows = _paper_rows(table)
  fixed_text = f"at {what == 'width' and 'resolution' or 'width'} {key[1]:g}"
  return [Claim(f"V1 Table {table}", f"{statement} ({fixed_text})",
                ", ".join(f"{r.top1}" for r in rows), ours, statistic, verdict,
                tuple(line))]


def _figure4(by_arch) -> list[Claim]:
  claims = []
  for family in sorted({arch[0] for arch in by_arch}):
    grid = [p for arch, p in by_arch.items()
            if arch[0] == family and arch[2:4] == ("full", "separable")]
    widths = {p.arch[1] for p in grid}
    resolutions = {p.arch[4] for p in grid}
    if len(widths) < 2 or len(resolutions) < 2 or len(grid) < 6:
      continue
    claims.append(_log_linear(family, grid))
  return claims


def _log_linear(family: str, grid: list[PointResult]) -> Claim:
  """Figure 4's claim over the point means: top-1 = a + b log10(the runs' own
  Mult-Adds; a proxy's are the paper point's times a constant, within a family)."""
  x = [math.log10(p.first.results.mult_adds) for p in grid]
  y = [p.summary.mean for p in grid]
  fit = stats.fit_line(x, y) if len(set(x)) > 1 else None
  if fit is None or fit.test is None:
    verdict = NOT_TESTABLE
  elif fit.test.significant and fit.slope > 0:
    verdict = HOLDS if fit.r2 >= MIN_R2 else FAILS
  else:
    verdict = FAILS if fit.test.significant else NOT_SIGNIFICANT
  name = "V1 Figures 4/5" if family == "mobilenet_v1" else "V2 grid (as V1 Figure 4)"
  return Claim(
      name, "accuracy is roughly log-linear in Mult-Adds",
      "a straight line on a log axis (released V1 grid: R^2 0.97)",
      f"{len(grid)} points, top-1 {min(y):.2f} to {max(y):.2f}",
      f"least squares over the point means: {fit.slope:+.2f} points per 10x Mult-Adds, "
      f"R^2 = {fit.r2:.2f}, t = {fit.test.t:.2f}, df = {fit.test.df:.0f}, p = "
      f"{stats.p_text(fit.test.p)}" if fit and fit.test else "too few distinct points",
      verdict, tuple(grid))
