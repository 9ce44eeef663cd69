"""The statistics `compare` reports: a mean with its t-based 95% confidence interval,
Welch's t-test between two points, and a least-squares line with its slope's t-test.

Seeds of one point are independent runs; nothing here assumes equal variances
between points (Welch) or more than two seeds per point. The t distribution comes
from scipy (already installed with JAX; pinned in requirements.txt).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE  # Two-sided significance level of every test here.


@dataclasses.dataclass(frozen=True)
class Summary:
  """n values: mean, sample standard deviation and the t-based 95% CI half-width
  (both None for n = 1)."""
  n: int
  mean: float
  std: float | None
  ci95: float | None

  def text(self, digits: int = 1) -> str:
    """"93.1 ± 0.4" (the 95% CI half-width), or "93.1" for one value."""
    if self.ci95 is None:
      return f"{self.mean:.{digits}f}"
    return f"{self.mean:.{digits}f} ± {self.ci95:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
  """Mean, standard deviation (n - 1) and 95% CI half-width t(0.975, n - 1) s / sqrt(n)."""
  n = len(values)
  if n == 0:
    raise ValueError("summarize() needs at least one value.")
  mean = math.fsum(values) / n
  if n == 1:
    return Summary(1, mean, None, None)
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
  half = t_quantile(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
  return Summary(n, mean, std, half)


def t_quantile(p: float, df: float) -> float:
  """The p-quantile of Student's t with `df` degrees of freedom."""
  return float(scipy_stats.t.ppf(p, df))


@dataclasses.dataclass(frozen=True)
class TTest:
  """A two-sided t-test of a difference (or slope): estimate, t, df and p."""
  estimate: float
  t: float
  df: float
  p: float

  @property
  def significant(self) -> bool:
    return self.p < ALPHA

  def text(self, what: str = "difference") -> str:
    """"difference +1.2 points, Welch t = 3.10, df = 3.8, p = 0.038"."""
    return (f"{what} {self.estimate:+.2f}, t = {self.t:.2f}, df = {self.df:.1f}, "
            f"p = {p_text(self.p)}")


def p_text(p: float) -> str:
  """A p-value in 3 decimals, or in scientific notation below 0.001."""
  return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def welch(a: Sequence[float], b: Sequence[float]) -> TTest | None:
  """Welch's t-test of mean(a) - mean(b) (unequal variances, Welch-Satterthwaite df);
  None when either side has fewer than 2 values or both have no spread."""
  if len(a) < 2 or len(b) < 2:
    return None
  sa, sb = summarize(a), summarize(b)
  va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
  diff = sa.mean - sb.mean
  if va + vb == 0:
    return None
  t = diff / math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
  p = 2 * float(scipy_stats.t.sf(abs(t), df))
  return TTest(diff, t, df, p)


@dataclasses.dataclass(frozen=True)
class Line:
  """y = intercept + slope x by least squares; `test` is the slope's t-test (df n - 2)
  and r2 the share of the variance of y the line explains."""
  slope: float
  intercept: float
  r2: float
  test: TTest | None


def fit_line(x: Sequence[float], y: Sequence[float]) -> Line:
  """Least-squares line through (x, y) with the t-test of its slope (n >= 3)."""
  n = len(x)
  if n != len(y) or n < 2:
    raise ValueError("fit_line() needs at least two (x, y) pairs.")
  mx, my = math.fsum(x) / n, math.fsum(y) / n
  sxx = math.fsum((v - mx) ** 2 for v in x)
  if sxx == 0:
    raise ValueError("fit_line(): all x are equal.")
  sxy = math.fsum((u - mx) * (v - my) for u, v in zip(x, y))
  syy = math.fsum((v - my) ** 2 for v in y)
  slope = sxy / sxx
  residual = max(0.0, syy - slope * sxy)
  r2 = 1.0 - residual / syy if syy else 1.0
  test = None
  if n > 2:
    se = math.sqrt(residual / (n - 2) / sxx)
    t = slope / se if se else math.copysign(math.inf, slope)
    test = TTest(slope, t, n - 2, 2 * float(scipy_stats.t.sf(abs(t), n - 2)))
  return Line(slope, my - slope * mx, r2, test)
