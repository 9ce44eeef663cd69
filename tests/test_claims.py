"""experiments/stats.py and experiments/claims.py on synthetic results with known
answers."""

import math

import pytest

from experiments import aggregate, claims, paper, references, stats
from experiments.results import RunResult
from mobilenet_jax.rundir import identity as run_identity, results as run_results


def test_t_quantiles_and_confidence_intervals():
  # Tables of Student's t: t(0.975, df).
  for df, value in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)):
    assert stats.t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
  summary = stats.summarize([90.0, 92.0, 94.0])
  assert (summary.n, summary.mean, summary.std) == (3, 92.0, 2.0)
  assert summary.ci95 == pytest.approx(4.3027 * 2.0 / math.sqrt(3), abs=1e-3)
  assert summary.text(2) == "92.00 ± 4.97"
  one = stats.summarize([93.5])
  assert (one.std, one.ci95, one.text()) == (None, None, "93.5")


def test_welch_known_answers():
  # df = 1: t is Cauchy, P(|T| > 2) = 1 - 2 atan(2) / pi.
  test = stats.welch([1.0, 3.0], [0.0, 0.0])
  assert (test.estimate, test.t, test.df) == (2.0, 2.0, 1.0)
  assert test.p == pytest.approx(1 - 2 * math.atan(2) / math.pi, abs=1e-9)
  # Wikipedia's first Welch example: t -2.46, df 24.99 (printed truncated, 24.9),
  # p 0.021; scipy's own Welch test agrees to the last digit.
  a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0,
       21.7, 21.4]
  b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9,
       20.5, 24.4]
  test = stats.welch(a, b)
  assert (round(test.t, 2), round(test.df, 2), round(test.p, 3)) == (-2.46, 24.99, 0.021)
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  reference = scipy_stats.ttest_ind(a, b, equal_var=False)
  assert (test.t, test.p) == pytest.approx((reference.statistic, reference.pvalue))
  assert stats.welch(b, a).t == pytest.approx(-test.t)
  assert stats.welch([1.0], [2.0, 3.0]) is None  # One seed has no spread to test.


def test_fit_line_known_answer():
  # slope 0.8, R^2 0.64, t = 0.8 / sqrt(0.18) with df 2, where P(|T| > t) is
  # 1 - t / sqrt(t^2 + 2) exactly: 0.2.
  line = stats.fit_line([1, 2, 3, 4], [1, 3, 2, 4])
  assert (line.slope, line.intercept, line.r2) == pytest.approx((0.8, 0.5, 0.64))
  assert line.test.p == pytest.approx(0.2) and not line.test.significant
  exact = stats.fit_line([0, 1, 2], [1, 3, 5])
  assert exact.r2 == 1.0 and exact.test.p == 0.0


def _point(spec, top1s, *, name=None, dataset="fashion_mnist", mult_adds=None):
  """A PointResult of `spec` (a V1/V2 config spec) with one seed per top-1 value."""
  config = run_identity.config_dict(paper.load_config(spec))
  config["data"]["name"], config["model"]["num_classes"] = dataset, 10
  name = name or run_identity.architecture_name(config)
  runs = []
  for seed, top1 in enumerate(top1s):
    metrics = run_results.EvalMetrics(loss=1.0, top1=top1 / 100, top5=1.0, num_examples=10)
    results = run_results.Results(
        config=config, final={"raw": metrics, "ema": metrics}, steps=100,
        params=1, mult_adds=mult_adds or 1, trainable_params=1, wall_time_s=1.0,
        train_images_per_sec=1.0, device_count=1, process_count=1, platform="cpu")
    runs.append(RunResult(name + (f"_seed{seed}" if seed else ""), "/nowhere", results,
                          config, False))
  (point,) = aggregate.by_point(runs)
  return point


def _verdicts(points):
  return {c.source: c.verdict for c in claims.check_claims(points)}


@pytest.mark.parametrize("full, verdict", [
    ([92.0, 92.2, 91.8], claims.HOLDS),  # +1.4, significant.
    ([89.0, 89.3, 89.1], claims.FAILS),  # Separable better, significantly.
    ([90.0, 91.5, 89.2], claims.NOT_SIGNIFICANT),
    ([92.0], claims.NOT_TESTABLE),  # One seed: no Welch test.
])
def test_table4_verdicts(full, verdict):
  points = [_point("mobilenet_v1.py:block=full_conv", full, mult_adds=860),
            _point("mobilenet_v1.py", [90.6, 90.4, 90.5], mult_adds=100)]
  (claim,) = claims.check_claims(points)
  assert (claim.source, claim.verdict) == ("V1 Table 4", verdict)
  assert claim.paper == "71.7 vs 70.6 (+1.1), 8.6x the Mult-Adds"
  assert "8.6x the Mult-Adds" in claim.ours


def test_table5_thinner_beats_shallower():
  points = [_point("mobilenet_v1.py:width=0.75", [91.0, 91.2, 91.1]),
            _point("mobilenet_v1.py:depth=shallow", [90.0, 90.3, 90.1])]
  (claim,) = claims.check_claims(points)
  assert (claim.source, claim.verdict) == ("V1 Table 5", claims.HOLDS)
  assert "Welch's t-test: difference +0.97" in claim.statistic


def _widths(means, spread=(0.1, -0.1, 0.0)):
  return [_point(f"mobilenet_v1.py:width={w}", [m + s for s in spread])
          for w, m in zip((1.0, 0.75, 0.5, 0.25), means)]


def test_table6_smooth_fall_with_width():
  assert _verdicts(_widths([92.0, 91.5, 90.8, 88.0])) == {"V1 Table 6": claims.HOLDS}
  # A significant step against the trend: 0.5 beats 0.75.
  assert _verdicts(_widths([92.0, 90.0, 91.0, 88.0])) == {"V1 Table 6": claims.FAILS}
  flat = _widths([90.0, 90.1, 89.9, 90.0], spread=(1.0, -1.0, 0.3))
  assert _verdicts(flat) == {"V1 Table 6": claims.NOT_SIGNIFICANT}
  # Untrained networks rank nothing.
  stuck = _widths([11.0, 10.5, 10.2, 9.8])
  (claim,) = claims.check_claims(stuck)
  assert claim.verdict == claims.NOT_TESTABLE and "at chance level" in claim.statistic


def test_table7_smooth_fall_with_resolution():
  points = [_point(f"mobilenet_v1.py:res={r}", [m + 0.1, m - 0.1, m])
            for r, m in zip((224, 192, 160, 128), (92.0, 91.6, 91.0, 90.1))]
  (claim,) = claims.check_claims(points)
  assert (claim.source, claim.verdict) == ("V1 Table 7", claims.HOLDS)
  assert "points per doubling of resolution" in claim.statistic


def test_figure4_log_linearity_on_the_released_grid():
  # The released V1 grid, as if we had trained it: log-linear (R^2 0.97).
  grid = [_point(f"mobilenet_v1.py:width={c.width},res={c.resolution}", [c.top1],
                 mult_adds=references.mult_adds_m(c) * 1e6, dataset="imagenet2012")
          for c in references.load_slim() if c.family == "v1"]
  verdicts = _verdicts(grid)
  assert verdicts["V1 Figures 4/5"] == claims.HOLDS
  # Width and resolution claims come from the same grid, at 224 and at width 1.
  assert verdicts["V1 Table 6"] == verdicts["V1 Table 7"] == claims.HOLDS
  # A significant rise that is not a line in log Mult-Adds: a step.
  step = [_point(f"mobilenet_v1.py:width={c.width},res={c.resolution}",
                 [95.0 if c.width >= 0.75 else 85.0],
                 mult_adds=references.mult_adds_m(c) * 1e6)
          for c in references.load_slim() if c.family == "v1"]
  (log_linear,) = [c for c in claims.check_claims(step) if c.source == "V1 Figures 4/5"]
  assert log_linear.verdict == claims.FAILS and "R^2 = 0." in log_linear.statistic
