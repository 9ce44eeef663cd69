"""`compare`'s figures: which plots a sweep gets, and the points and lines on them
(experiments/plots.py draws them)."""

from __future__ import annotations

from etils import epath

from . import paper, plots, references
from .aggregate import PointResult
from .results import read_train_metrics
from mobilenet_jax.rundir import identity as run_identity

MULT_ADDS_PLOT = "accuracy_vs_mult_adds.png"
PARAMS_PLOT = "accuracy_vs_params.png"
STALENESS_PLOT = "top1_vs_staleness.png"
BATCH_PLOT = "top1_vs_batch_size.png"
CURVES_PLOT = "training_curves.png"


def _cost_point(point: PointResult) -> tuple[float, float]:
  """(Mult-Adds M, params M) of the point a run stands for (its own, if it is one)."""
  if not point.stands_in:
    results = point.first.results
    return results.mult_adds / 1e6, results.params / 1e6
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import costs  # pylint: disable=g-import-not-at-top
  counted = costs.costs_for_config(ml_collections.ConfigDict(point.point_config))
  return counted.mult_adds / 1e6, counted.params / 1e6


def _reference_lines(families: set[str]) -> tuple[dict, dict]:
  """({label: [(mult_adds_m, params_m, top1)]}) for the paper and released grids."""
  paper_lines: dict[str, list] = {}
  seen = set()
  for row in paper.load_paper_results():
    if not row.is_mobilenet:
      continue
    arch = run_identity.architecture(paper.load_config(row.config))
    if arch in seen or arch[0].replace("mobilenet_", "") not in families:
      continue
    seen.add(arch)
    name, width, depth, block, _ = arch
    label = (f"{name.replace('mobilenet_', '').upper()} width {width:g}"
             if (depth, block) == ("full", "separable") else row.model)
    paper_lines.setdefault(label, []).append((row.mult_adds_m, row.params_m, row.top1))
  released: dict[str, list] = {}
  for ckpt in references.load_slim():
    if ckpt.family in families:
      released.setdefault(f"{ckpt.family.upper()} width {ckpt.width:g}", []).append(
          (references.mult_adds_m(ckpt), ckpt.params_m_published, ckpt.top1))
  return paper_lines, released


def chance_level(points: list[PointResult]) -> float | None:
  """Percent: 100 / classes of the points' dataset, if they share one class count."""
  counts = {p.first.num_classes for p in points}
  return 100.0 / counts.pop() if len(counts) == 1 else None


def architecture_plots(points: list[PointResult], out_dir: epath.Path) -> list[str]:
  """Figures 4 and 5 with the paper's and the released grids; the files written."""
  families = {p.arch[0].replace("mobilenet_", "") for p in points} or {"v1"}
  paper_lines, released = _reference_lines(families)
  costs = {p.name: _cost_point(p) for p in points}
  others = [p for p in points if not p.comparable]
  written = []
  for index, (x, name) in enumerate((("mult_adds_m", MULT_ADDS_PLOT),
                                     ("params_m", PARAMS_PLOT))):
    pick = lambda lines: {k: [(p[index], p[2]) for p in v] for k, v in lines.items()}
    ours = [(costs[p.name][index], p.summary.mean, p.summary.ci95 or 0.0, p.name,
             p.comparable) for p in points]
    note = ("Smoke and proxy runs are drawn at the cost of the paper point they stand "
            "for." if any(p.stands_in for p in points) else "")
    plots.accuracy_vs_cost(out_dir / name, x=x, paper_lines=pick(paper_lines),
                           released_lines=pick(released), ours=ours, note=note,
                           chance=chance_level(others) if others else None,
                           dataset=", ".join(sorted({p.dataset for p in others})))
    written.append(name)
  return written


def _cell(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def _lines(points: list[PointResult], x_key: str, keys: list[str],
           join_at_zero: bool = False) -> dict:
  """{label of the other swept keys: [(x, mean, ci)]}; x=0 points join every line if
  asked."""
  others = [k for k in keys if k != x_key]
  lines: dict[str, list] = {}
  zero = []
  for point in points:
    flat = run_identity.flatten(point.point_config)
    entry = (flat.get(x_key), point.summary.mean, point.summary.ci95 or 0.0)
    if join_at_zero and not flat.get(x_key):
      zero.append((0, *entry[1:]))
      continue
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_cell(flat.get(k))}" for k in others)
    lines.setdefault(label or "top-1", []).append(entry)
  for pts in lines.values():
    pts.extend(zero)
  return lines or ({"synchronous": zero} if zero else {})


def recipe_plots(points: list[PointResult], out_dir: epath.Path, keys: list[str]
                 ) -> list[str]:
  """Top-1 against staleness and against batch size, where those are swept."""
  smoke_note = ("Smoke runs (shapes10, scaled down): the shape of the study, not "
                "ImageNet accuracies." if any(not p.comparable for p in points) else "")
  chance = chance_level(points)
  written = []
  if "staleness" in keys:
    plots.lines_plot(out_dir / STALENESS_PLOT,
                     _lines(points, "staleness", keys, join_at_zero=True),
                     xlabel="staleness tau (updates)",
                     ylabel="final top-1 (%), mean ± 95% CI",
                     title="Top-1 vs staleness (asynchronous-training emulation)",
                     caption=smoke_note, chance=chance)
    written.append(STALENESS_PLOT)
  if "global_batch_size" in keys:
    batch_keys = [k for k in keys if k != "grad_accum_steps"]
    labels = {(run_identity.flatten(p.point_config)["global_batch_size"], p.summary.mean):
              f"accum {run_identity.flatten(p.point_config).get('grad_accum_steps', 1)}"
              for p in points}
    plots.lines_plot(out_dir / BATCH_PLOT, _lines(points, "global_batch_size", batch_keys),
                     xlabel="global batch size (full-size point)",
                     ylabel="final top-1 (%), mean ± 95% CI", log2_x=True,
                     title="Top-1 vs batch size (linear LR scaling + warmup)",
                     caption=smoke_note, point_labels=labels, chance=chance)
    written.append(BATCH_PLOT)
  return written


def curves_plot(points: list[PointResult], out_dir: epath.Path) -> list[str]:
  """Every seed's training curves against images seen (step x the run's global
  batch), one colour per point."""
  curves = {}
  for point in points:
    seeds = []
    for run in point.runs:
      batch = int(run.results.config["global_batch_size"])
      rows = [{**r, "images": r["step"] * batch} for r in read_train_metrics(run)
              if "loss" in r and "top1" in r and "step" in r]
      if rows:
        seeds.append(rows)
    if seeds:
      curves[point.name] = seeds
  if not curves:
    return []
  plots.training_curves(out_dir / CURVES_PLOT, curves)
  return [CURVES_PLOT]
