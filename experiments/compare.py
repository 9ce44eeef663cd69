r"""Compares a sweep's runs with the papers, the released checkpoints, and each other.

  python -m experiments.compare --root=runs/table6
  python -m experiments.compare --root=gs://BUCKET/runs/async --out=/tmp/async_report

Reads ROOT through experiments/results.py (every ROOT/*/ run directory and
ROOT/manifest.json if the launcher wrote one: it says which paper point a smoke or
proxy run stands for). Seeds of a point ("<point>", "<point>_seed1", ...) are
aggregated: n, mean, standard deviation and t-based 95% confidence interval of top-1
(experiments/aggregate.py). Writes to OUT (default ROOT):

  comparison.md               architecture sweeps: one row per paper MobileNet (paper
                              and released TF-slim top-1 beside ours, Mult-Adds,
                              params; "not run" or the unfinished state where no run
                              finished) and one per other point; recipe sweeps: top-1
                              and eval loss against the swept settings. Then the runs
                              that did not finish, and the paper claims the points
                              test, with the statistic and a verdict
                              (experiments/claims.py). Also printed.
  accuracy_vs_mult_adds.png   top-1 vs Mult-Adds (V1 paper, Figure 4) and vs params
  accuracy_vs_params.png      (Figure 5) with the paper's and the released grid
  top1_vs_staleness.png       recipe sweeps that vary staleness
  top1_vs_batch_size.png      recipe sweeps that vary the global batch
  training_curves.png         train loss and top-1 against images seen, per point

Points carry 95% confidence intervals as error bars; plots of runs on another
dataset than ImageNet show them in their own panel with the chance level drawn.
Our top-1 is that of the EMA weights where the run kept them, else of the raw ones.
A root that does not exist or holds no runs is one `error:` line, and nothing is
written.

Installed with pip, the same program is `mobilenet-compare`.
"""

from __future__ import annotations

from absl import app, flags
from etils import epath

from mobilenet_jax import cli
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout

from . import aggregate, claims as claims_lib, figures, paper, references
from . import results as results_lib, sweeps
from .aggregate import PointResult

PAPER_DATASET = results_lib.PAPER_DATASET
MARKDOWN_FILE = "comparison.md"
MULT_ADDS_PLOT = figures.MULT_ADDS_PLOT
PARAMS_PLOT = figures.PARAMS_PLOT
STALENESS_PLOT = figures.STALENESS_PLOT
BATCH_PLOT = figures.BATCH_PLOT
CURVES_PLOT = figures.CURVES_PLOT
# Settings that vary between the runs of one point, not between points.
_PER_RUN_KEYS = ("seed",)


# ------------------------------------------------------------------ architecture table

def _table_label(row: paper.PaperResult) -> str:
  return f"V1 Table {row.table}" if row.paper == "v1" else f"{row.paper.upper()} {row.table}"


COLUMNS = ("paper table", "model", "paper top-1", "released top-1", "ours top-1", "n",
           "std", "95% CI", "delta", "paper Mult-Adds (M)", "ours Mult-Adds (M)",
           "paper params (M)", "ours params (M)", "steps", "dataset", "run")


def build_table(points: list[PointResult], sweep_archs: dict | None = None,
                paper_table: tuple[str, str] | None = None
                ) -> tuple[list[dict[str, str]], list[str]]:
  """The architecture comparison rows (column -> cell) and the notes under them.

  Paper rows without a finished point are listed as "not run", or with the state of
  the sweep's unfinished point (`sweep_archs`: {architecture: state}, the sweep's
  planned architectures; only those are listed when given). With `paper_table`
  (("v1", "6")) only that table's rows are listed.
  """
  by_arch: dict[tuple, list[PointResult]] = {}
  for point in points:
    by_arch.setdefault(point.arch, []).append(point)
  table, marks, seen = [], set(), set()
  for row in paper.load_paper_results():
    if not row.is_mobilenet or (paper_table and (row.paper, row.table) != paper_table):
      continue
    arch = run_identity.architecture(paper.load_config(row.config))
    released = references.lookup_arch(arch)
    base = {"paper table": _table_label(row), "model": row.model,
            "paper top-1": f"{row.top1:.1f}",
            "released top-1": f"{released.top1:.1f}" if released else "-",
            "paper Mult-Adds (M)": f"{row.mult_adds_m:g}",
            "paper params (M)": f"{row.params_m:g}"}
    seen.add(arch)
    if arch not in by_arch:
      if sweep_archs is None or arch in sweep_archs:
        state = (sweep_archs or {}).get(arch) or "not run"
        table.append({**base, **dict.fromkeys(COLUMNS[4:], ""), "ours top-1": state})
      continue
    for point in by_arch[arch]:
      table.append({**base, **_point_cells(point, marks, row.top1)})
  for arch, group in by_arch.items():
    if arch in seen:
      continue
    released = references.lookup_arch(arch)
    base = {"paper table": "released" if released else "-",
            "model": run_identity.architecture_name(group[0].point_config),
            "paper top-1": "-", "released top-1": f"{released.top1:.1f}" if released else "-",
            "paper Mult-Adds (M)": "-", "paper params (M)": "-"}
    for point in group:
      table.append({**base, **_point_cells(point, marks,
                                           released.top1 if released else None)})
  return table, _notes(points, marks)


def _point_cells(point: PointResult, marks: set[str], reference: float | None) -> dict:
  summary = point.summary
  dataset, name = point.dataset, point.name
  if not point.comparable:
    dataset += " †"
    marks.add("dataset")
  if point.stands_in:
    name += " ‡"
    marks.add("arch")
  digits = 1 if summary.n == 1 else 2
  delta = (f"{summary.mean - reference:+.{digits}f}"
           if point.comparable and reference is not None else "n/a")
  n = str(summary.n) + (f" (+{len(point.unfinished)} unfinished)"
                        if point.unfinished else "")
  results = point.first.results
  return {"ours top-1": f"{summary.mean:.{digits}f} ({point.source})", "n": n,
          "std": "-" if summary.std is None else f"{summary.std:.2f}",
          "95% CI": "-" if summary.ci95 is None else f"±{summary.ci95:.2f}",
          "delta": delta, "ours Mult-Adds (M)": f"{results.mult_adds / 1e6:.1f}",
          "ours params (M)": f"{results.params / 1e6:.2f}", "steps": str(results.steps),
          "dataset": dataset, "run": name}


def _notes(points, marks) -> list[str]:
  notes = ["Top-1 in percent on the evaluation split, the mean over the point's seeds "
           "(n; std: their standard deviation; 95% CI: the t-based confidence interval "
           "of the mean); ours is that of the EMA weights where the run kept them, else "
           "of the raw ones (in brackets). Delta = ours - paper (or - released, for "
           "architectures the paper does not print), in points. Released = TF-slim's "
           "published checkpoints (re-trained, 1001 classes)."]
  if "dataset" in marks:
    notes.append(f"† Not trained on the paper's dataset ({PAPER_DATASET}): its accuracy "
                 "is not comparable to the paper's, so no delta is given.")
  if "arch" in marks:
    notes.append("‡ Stands in for the paper's point: a smoke run (--local_smoke, scaled "
                 "down) or a proxy run (--proxy, its resolution mapped onto the proxy "
                 "dataset); its Mult-Adds and params are its own.")
  if not points:
    notes.append(f"No finished runs (no */{layout.RESULTS_FILE} that parses) under the "
                 "root.")
  return notes


def to_markdown(table: list[dict[str, str]], notes: list[str],
                columns: tuple[str, ...] = COLUMNS) -> str:
  """The rows as a GitHub markdown table, with the notes below it."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in table]
  return "\n".join(lines + [""] + notes) + "\n"


# ------------------------------------------------------------------ recipe table

def swept_keys(points: list[PointResult]) -> list[str]:
  """The settings that vary between the points (smoke scaling and seeds aside)."""
  return [k for k in run_identity.differing_keys([p.point_config for p in points])
          if k not in _PER_RUN_KEYS]


def recipe_table(points: list[PointResult]
                 ) -> tuple[list[dict[str, str]], tuple, list[str]]:
  """Rows of final top-1 and loss against the swept keys; (rows, columns, notes)."""
  keys = swept_keys(points)
  columns = ("run", *keys, "steps", "final top-1", "n", "95% CI", "eval loss",
             "train loss", "wall time (s)", "dataset")

  def order(point):  # By the swept values: numbers as numbers, then text.
    flat = run_identity.flatten(point.point_config)
    return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
            for v in (flat.get(k) for k in keys)]

  table = []
  for point in sorted(points, key=order):
    flat = run_identity.flatten(point.point_config)
    summary = point.summary
    train = [results_lib.read_train_metrics(r) for r in point.runs]
    losses = [rows[-1]["loss"] for rows in train if rows and "loss" in rows[-1]]
    digits = 1 if summary.n == 1 else 2
    table.append({
        "run": point.name, **{k: _cell(flat.get(k)) for k in keys},
        "steps": str(point.first.results.steps),
        "final top-1": f"{summary.mean:.{digits}f} ({point.source})",
        "n": str(summary.n), "95% CI": "-" if summary.ci95 is None
        else f"±{summary.ci95:.2f}",
        "eval loss": f"{sum(r.results.loss for r in point.runs) / summary.n:.3f}",
        "train loss": f"{sum(losses) / len(losses):.3f}" if losses else "-",
        "wall time (s)": f"{point.first.results.wall_time_s:.0f}",
        "dataset": point.dataset})
  notes = ["Swept settings as the full-size points set them. Top-1 in percent on the "
           "evaluation split (EMA weights where kept), the mean over the point's seeds "
           "(n) with the t-based 95% confidence interval; losses are the seeds' mean "
           "last eval (plain cross-entropy) and last logged training interval."]
  if any(p.stands_in or not p.comparable for p in points):
    notes.append("Smoke runs: each point scaled down (shapes10, resolution 32-40 px, "
                 "batch / 16, a few dozen steps; experiments/smoke.py). They show the "
                 "plumbing and the sweep's shape, not ImageNet accuracies.")
  if not points:
    notes.append(f"No finished runs (no */{layout.RESULTS_FILE} that parses) under the "
                 "root.")
  return table, columns, notes


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  return "-" if value is None else str(value)


# ------------------------------------------------------------------ other sections

def unfinished_section(root: results_lib.Root) -> str:
  """The runs without results, each with its state; "" when every run finished."""
  if not root.unfinished:
    return ""
  total = len(root.runs) + len(root.unfinished)
  lines = [f"## Not finished: {len(root.unfinished)} of {total} runs", ""]
  lines += [f"- {u.name}: {u.state} ({u.detail})" for u in root.unfinished]
  return "\n".join(lines) + "\n"


def claims_section(points: list[PointResult]) -> str:
  """The paper claims the points test, as a table; "" when they test none."""
  checked = claims_lib.check_claims(points)
  if not checked:
    return ""
  datasets = sorted({p.dataset for p in points})
  lines = [f"## The paper's claims, tested on {', '.join(datasets)}", "",
           "| source | claim | paper | ours (mean ± 95% CI) | statistic | verdict |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {c.source} | {c.statement} | {c.paper} | {c.ours} | {c.statistic} | "
            f"**{c.verdict}** |" for c in checked]
  lines += ["", "Two-sided tests at 5%; verdicts as experiments/claims.py defines them. "
            "A proxy ranks points after equal, short training on its own dataset: it "
            "tests the direction of a finding, not the paper's figures."]
  return "\n".join(lines) + "\n"


def sweep_kind(points: list[PointResult], manifest: dict | None) -> str:
  """"architecture" or "recipe": the manifest's word, else "architecture" when no two
  points share an architecture."""
  if manifest and manifest.get("kind"):
    return manifest["kind"]
  return "architecture" if len({p.arch for p in points}) == len(points) else "recipe"


def _planned_archs(root: results_lib.Root) -> dict | None:
  """{architecture: "" or the state of its unfinished runs} of the manifest's points."""
  if not root.manifest:
    return None
  states = {}
  for item in root.unfinished:
    states.setdefault(sweeps.seed_of(item.name)[0], item.state)
  planned = {}
  for p in root.manifest.get("points", []):
    if "point_config" in p:
      arch = run_identity.architecture(p["point_config"])
      planned[arch] = planned.get(arch) or states.get(sweeps.seed_of(p["name"])[0], "")
  return planned or None


# ------------------------------------------------------------------ entry points

def compare(root: str, out: str | None = None) -> str:
  """Writes comparison.md and the figures to `out` (default `root`); returns the
  markdown. RootError (nothing written) if `root` is missing or holds no runs."""
  loaded = results_lib.load_root(root)
  points = aggregate.by_point(loaded.runs, loaded.unfinished)
  out_dir = epath.Path(out or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  if sweep_kind(points, loaded.manifest) == "architecture":
    paper_table = None
    if loaded.manifest and loaded.manifest.get("sweep") in sweeps.SWEEP_NAMES:
      paper_table = sweeps.get_sweep(loaded.manifest["sweep"]).paper_table
    table, notes = build_table(points, _planned_archs(loaded), paper_table)
    markdown = to_markdown(table, notes)
    written = figures.architecture_plots(points, out_dir)
  else:
    table, columns, notes = recipe_table(points)
    markdown = to_markdown(table, notes, columns)
    written = figures.recipe_plots(points, out_dir, swept_keys(points))
  for section in (unfinished_section(loaded), claims_section(points)):
    if section:
      markdown += "\n" + section
  written += figures.curves_plot(points, out_dir)
  (out_dir / MARKDOWN_FILE).write_text(markdown)
  _WRITTEN[str(out_dir)] = [MARKDOWN_FILE, *written]
  return markdown


_WRITTEN: dict[str, list[str]] = {}


def written_files(out: str) -> list[str]:
  """The files the last `compare` into `out` wrote."""
  return _WRITTEN.get(str(epath.Path(out)), [])


def define_flags() -> None:
  """The flags of `mobilenet-compare`."""
  cli.define_root(f"The sweep's root: ROOT/<run>/{layout.RESULTS_FILE}.")
  flags.DEFINE_string("out", None, "Where the table and plots go; default ROOT.")


def main(argv):
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  root = flags.FLAGS.root
  out = flags.FLAGS.out or root
  print(compare(root, out))
  print(f"Wrote {', '.join(written_files(out))} to {out}")


def console_main():
  """The `mobilenet-compare` console script (and `python -m experiments.compare`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
