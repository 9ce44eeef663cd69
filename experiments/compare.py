r"""Compares a sweep's finished runs with the papers, the released checkpoints, and
each other.

  python -m experiments.compare --root=runs/table6
  python -m experiments.compare --root=gs://BUCKET/runs/async --out=/tmp/async_report

Reads every ROOT/*/ run directory through mobilenet_jax.rundir (results.json,
metrics.jsonl) and ROOT/manifest.json if the launcher wrote one (it says which point
a smoke run stands for). Writes to OUT (default ROOT):

  comparison.md               architecture sweeps: one row per paper MobileNet (paper
                              and released TF-slim checkpoint top-1 beside ours,
                              Mult-Adds, params; "not run" where no run matches) and
                              one per other run; recipe sweeps: final top-1 and eval
                              loss against the swept settings. Also printed.
  accuracy_vs_mult_adds.png   top-1 vs Mult-Adds, log scale (V1 paper, Figure 4), with
  accuracy_vs_params.png      the paper's and the released grid as lines per width
                              (Figure 5: vs parameters); architecture sweeps
  top1_vs_staleness.png       recipe sweeps that vary staleness: a line per number of
                              workers and staleness scaling
  top1_vs_batch_size.png      recipe sweeps that vary the global batch
  training_curves.png         train loss and top-1 against step, every run overlaid

Our top-1 is that of the EMA weights where the run kept them, else of the raw ones.
Runs on another dataset than the paper's ImageNet (smoke runs on shapes10) are
flagged: their accuracies are not comparable to the papers'.

Installed with pip, the same program is `mobilenet-compare`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app, flags
from etils import epath

from mobilenet_jax import cli
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout, metrics_file
from mobilenet_jax.rundir import results as run_results

from . import manifest as manifest_lib, paper, plots, references, sweeps

PAPER_DATASET = "imagenet2012"
MARKDOWN_FILE = "comparison.md"
MULT_ADDS_PLOT = "accuracy_vs_mult_adds.png"
PARAMS_PLOT = "accuracy_vs_params.png"
STALENESS_PLOT = "top1_vs_staleness.png"
BATCH_PLOT = "top1_vs_batch_size.png"
CURVES_PLOT = "training_curves.png"


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One finished run, as the comparison sees it."""
  name: str  # The workdir's name: the sweep's point name.
  workdir: str
  results: run_results.Results
  point_config: dict  # The config of the point it stands for (a smoke run: unshrunk).
  stands_in: bool  # Trained a scaled-down version of `point_config` (smoke mode).

  @property
  def arch(self) -> tuple:
    return run_identity.architecture(self.point_config)

  @property
  def top1(self) -> float:
    """Percent, as the papers print it."""
    return 100.0 * self.results.top1[0]

  @property
  def dataset(self) -> str:
    return self.results.config["data"]["name"]

  @property
  def comparable(self) -> bool:
    return self.dataset == PAPER_DATASET


def load_results(root: str) -> tuple[list[RunResult], list[str], dict | None]:
  """The finished runs under `root`, warnings about directories left out, manifest."""
  manifest = manifest_lib.read(root)
  planned = {p["name"]: p for p in (manifest or {}).get("points", [])}
  known = {p.name: p for p in sweeps.get_sweep("all").points}
  runs, warnings = [], []
  for path in sorted(epath.Path(root).glob(f"*/{layout.RESULTS_FILE}")):
    workdir = path.parent
    try:
      results = run_results.read_results(workdir)
    except run_results.ResultsError as e:  # A partial or foreign file.
      warnings.append(f"{path}: left out ({e})")
      continue
    point = results.config
    if manifest and manifest.get("smoke") and "point_config" in planned.get(
        workdir.name, {}):
      point = planned[workdir.name]["point_config"]  # The full-size point it stands for.
    elif (workdir.name in known and run_identity.architecture(results.config)
          != run_identity.architecture(known[workdir.name].build())):
      point = run_identity.config_dict(known[workdir.name].build())  # Matched by name.
    stands_in = run_identity.architecture(point) != run_identity.architecture(results.config)
    runs.append(RunResult(workdir.name, str(workdir), results, point, stands_in))
  return runs, warnings, manifest


# ------------------------------------------------------------------ architecture table

def _paper_rows() -> list[tuple[paper.PaperResult, tuple]]:
  """The papers' MobileNet rows, each with the architecture of its config."""
  return [(row, run_identity.architecture(paper.load_config(row.config)))
          for row in paper.load_paper_results() if row.is_mobilenet]


def _table_label(row: paper.PaperResult) -> str:
  return f"V1 Table {row.table}" if row.paper == "v1" else f"{row.paper.upper()} {row.table}"


COLUMNS = ("paper table", "model", "paper top-1", "released top-1", "ours top-1",
           "delta", "paper Mult-Adds (M)", "ours Mult-Adds (M)", "paper params (M)",
           "ours params (M)", "steps", "dataset", "run")


def build_table(runs: list[RunResult], sweep_archs: set | None = None,
                paper_table: tuple[str, str] | None = None
                ) -> tuple[list[dict[str, str]], list[str]]:
  """The architecture comparison rows (column -> cell) and the notes under them.

  Paper rows without a run are listed as "not run" (only those of `sweep_archs`, the
  sweep's architectures, when given). With `paper_table` (("v1", "6")) only that
  table's rows are listed.
  """
  by_arch: dict[tuple, list[RunResult]] = {}
  for run in runs:
    by_arch.setdefault(run.arch, []).append(run)
  table, marks, seen = [], set(), set()
  for row, arch in _paper_rows():
    if paper_table and (row.paper, row.table) != paper_table:
      continue
    released = references.lookup_arch(arch)
    base = {"paper table": _table_label(row), "model": row.model,
            "paper top-1": f"{row.top1:.1f}",
            "released top-1": f"{released.top1:.1f}" if released else "-",
            "paper Mult-Adds (M)": f"{row.mult_adds_m:g}",
            "paper params (M)": f"{row.params_m:g}"}
    seen.add(arch)
    if arch not in by_arch:
      if sweep_archs is None or arch in sweep_archs:
        table.append({**base, **dict.fromkeys(COLUMNS[4:], ""), "ours top-1": "not run"})
      continue
    for run in by_arch[arch]:
      table.append({**base, **_run_cells(run, marks, row.top1)})
  for arch, group in by_arch.items():
    if arch in seen:
      continue
    released = references.lookup_arch(arch)
    base = {"paper table": "released" if released else "-",
            "model": run_identity.architecture_name(group[0].point_config),
            "paper top-1": "-", "released top-1": f"{released.top1:.1f}" if released else "-",
            "paper Mult-Adds (M)": "-", "paper params (M)": "-"}
    for run in group:
      table.append({**base, **_run_cells(run, marks, released.top1 if released else None)})
  return table, _notes(runs, marks)


def _run_cells(run: RunResult, marks: set[str], reference: float | None) -> dict:
  dataset, name = run.dataset, run.name
  if not run.comparable:
    dataset += " †"
    marks.add("dataset")
  if run.stands_in:
    name += " ‡"
    marks.add("arch")
  delta = (f"{run.top1 - reference:+.1f}" if run.comparable and reference is not None
           else "n/a")
  return {"ours top-1": f"{run.top1:.1f} ({run.results.top1[1]})", "delta": delta,
          "ours Mult-Adds (M)": f"{run.results.mult_adds / 1e6:.1f}",
          "ours params (M)": f"{run.results.params / 1e6:.2f}",
          "steps": str(run.results.steps), "dataset": dataset, "run": name}


def _notes(runs, marks) -> list[str]:
  notes = ["Top-1 in percent on the evaluation split; ours is that of the EMA weights "
           "where the run kept them, else of the raw ones (in brackets). Delta = ours "
           "- paper (or - released, for architectures the paper does not print), in "
           "points. Released = TF-slim's published checkpoints (re-trained, 1001 "
           "classes)."]
  if "dataset" in marks:
    notes.append(f"† Not trained on the paper's dataset ({PAPER_DATASET}): its accuracy "
                 "is not comparable to the paper's, so no delta is given.")
  if "arch" in marks:
    notes.append("‡ A smoke run (--local_smoke): it trained this architecture scaled "
                 "down (resolution x 32/224); its Mult-Adds and params are its own.")
  if not runs:
    notes.append("No finished runs (no */results.json) under the root.")
  return notes


def to_markdown(table: list[dict[str, str]], notes: list[str],
                columns: tuple[str, ...] = COLUMNS) -> str:
  """The rows as a GitHub markdown table, with the notes below it."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in table]
  return "\n".join(lines + [""] + notes) + "\n"


# ------------------------------------------------------------------ recipe table

def swept_keys(runs: list[RunResult]) -> list[str]:
  """The settings that vary between the points of the runs (smoke scaling aside)."""
  return run_identity.differing_keys([r.point_config for r in runs])


def recipe_table(runs: list[RunResult]) -> tuple[list[dict[str, str]], tuple, list[str]]:
  """Rows of final top-1 and loss against the swept keys; (rows, columns, notes)."""
  keys = swept_keys(runs)
  columns = ("run", *keys, "steps", "final top-1", "eval loss", "train loss",
             "wall time (s)", "dataset")
  def order(run):  # By the swept values: numbers as numbers, then text.
    flat = run_identity.flatten(run.point_config)
    return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
            for v in (flat.get(k) for k in keys)]

  table = []
  for run in sorted(runs, key=order):
    flat = run_identity.flatten(run.point_config)
    train = metrics_file.read_rows(run.workdir, "train")
    table.append({
        "run": run.name, **{k: _cell(flat.get(k)) for k in keys},
        "steps": str(run.results.steps),
        "final top-1": f"{run.top1:.1f} ({run.results.top1[1]})",
        "eval loss": f"{run.results.loss:.3f}",
        "train loss": f"{train[-1]['loss']:.3f}" if train else "-",
        "wall time (s)": f"{run.results.wall_time_s:.0f}", "dataset": run.dataset})
  notes = ["Swept settings as the full-size points set them. Top-1 in percent on the "
           "evaluation split (EMA weights where kept); losses are the last eval "
           "(plain cross-entropy) and the last logged training interval."]
  if any(r.stands_in or not r.comparable for r in runs):
    notes.append("Smoke runs: each point scaled down (shapes10, resolution x 32/224, "
                 "batch / 16, a few hundred steps; experiments/smoke.py). They show the "
                 "plumbing and the sweep's shape, not ImageNet accuracies.")
  if not runs:
    notes.append("No finished runs (no */results.json) under the root.")
  return table, columns, notes


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  return "-" if value is None else str(value)


# ------------------------------------------------------------------ figures

def _cost_point(run: RunResult) -> tuple[float, float]:
  """(Mult-Adds M, params M) of the point a run stands for (its own, if it is one)."""
  if not run.stands_in:
    return run.results.mult_adds / 1e6, run.results.params / 1e6
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import costs  # pylint: disable=g-import-not-at-top
  counted = costs.costs_for_config(ml_collections.ConfigDict(run.point_config))
  return counted.mult_adds / 1e6, counted.params / 1e6


def _reference_lines(families: set[str]) -> tuple[dict, dict]:
  """({label: [(mult_adds_m, params_m, top1)]}) for the paper and released grids."""
  paper_lines: dict[str, list] = {}
  seen = set()
  for row, arch in _paper_rows():
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


def architecture_plots(runs: list[RunResult], out_dir: epath.Path) -> list[str]:
  """Figures 4 and 5 with the paper's and the released grids; the files written."""
  families = {r.arch[0].replace("mobilenet_", "") for r in runs} or {"v1"}
  paper_lines, released = _reference_lines(families)
  costs = {r.name: _cost_point(r) for r in runs}
  written = []
  for index, (x, name) in enumerate((("mult_adds_m", MULT_ADDS_PLOT),
                                     ("params_m", PARAMS_PLOT))):
    pick = lambda lines: {k: [(p[index], p[2]) for p in v] for k, v in lines.items()}
    ours = [(costs[r.name][index], r.top1, r.name, r.comparable) for r in runs]
    note = ("Smoke runs are drawn at the cost of the full-size point they stand for."
            if any(r.stands_in for r in runs) else "")
    plots.accuracy_vs_cost(out_dir / name, x=x, paper_lines=pick(paper_lines),
                           released_lines=pick(released), ours=ours, note=note)
    written.append(name)
  return written


def _lines(runs, x_key: str, keys: list[str], join_at_zero: bool = False) -> dict:
  """{label of the other swept keys: [(x, top1)]}; x=0 runs join every line if asked."""
  others = [k for k in keys if k != x_key]
  lines: dict[str, list] = {}
  zero = []
  for run in runs:
    flat = run_identity.flatten(run.point_config)
    if join_at_zero and not flat.get(x_key):
      zero.append((0, run.top1))
      continue
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_cell(flat.get(k))}" for k in others)
    lines.setdefault(label or "top-1", []).append((flat.get(x_key), run.top1))
  for pts in lines.values():
    pts.extend(zero)
  return lines or ({"synchronous": zero} if zero else {})


def recipe_plots(runs: list[RunResult], out_dir: epath.Path) -> list[str]:
  """Top-1 against staleness and against batch size, where those are swept."""
  keys = swept_keys(runs)
  smoke_note = ("Smoke runs (shapes10, scaled down): the shape of the study, not "
                "ImageNet accuracies." if any(not r.comparable for r in runs) else "")
  written = []
  if "staleness" in keys:
    plots.lines_plot(out_dir / STALENESS_PLOT,
                     _lines(runs, "staleness", keys, join_at_zero=True),
                     xlabel="staleness tau (updates)", ylabel="final top-1 (%)",
                     title="Top-1 vs staleness (asynchronous-training emulation)",
                     caption=smoke_note)
    written.append(STALENESS_PLOT)
  if "global_batch_size" in keys:
    batch_keys = [k for k in keys if k != "grad_accum_steps"]
    labels = {(run_identity.flatten(r.point_config)["global_batch_size"], r.top1):
              f"accum {run_identity.flatten(r.point_config).get('grad_accum_steps', 1)}"
              for r in runs}
    plots.lines_plot(out_dir / BATCH_PLOT, _lines(runs, "global_batch_size", batch_keys),
                     xlabel="global batch size (full-size point)",
                     ylabel="final top-1 (%)", log2_x=True,
                     title="Top-1 vs batch size (linear LR scaling + warmup)",
                     caption=smoke_note, point_labels=labels)
    written.append(BATCH_PLOT)
  return written


def curves_plot(runs: list[RunResult], out_dir: epath.Path) -> list[str]:
  """Every run's training curves overlaid, from metrics.jsonl."""
  curves = {r.name: metrics_file.read_rows(r.workdir, "train") for r in runs}
  curves = {k: v for k, v in curves.items() if v}
  if not curves:
    return []
  plots.training_curves(out_dir / CURVES_PLOT, curves)
  return [CURVES_PLOT]


# ------------------------------------------------------------------ entry points

def sweep_kind(runs: list[RunResult], manifest: dict | None) -> str:
  """"architecture" or "recipe": the manifest's word, else "architecture" when no two
  runs share an architecture."""
  if manifest and manifest.get("kind"):
    return manifest["kind"]
  return "architecture" if len({r.arch for r in runs}) == len(runs) else "recipe"


def compare(root: str, out: str | None = None) -> str:
  """Writes comparison.md and the figures to `out` (default `root`); returns the
  markdown."""
  runs, warnings, manifest = load_results(root)
  out_dir = epath.Path(out or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  kind = sweep_kind(runs, manifest)
  if kind == "architecture":
    sweep_archs = ({run_identity.architecture(p["point_config"]) for p in manifest["points"]
                    if "point_config" in p} if manifest else None)
    paper_table = None
    if manifest and manifest.get("sweep") in sweeps.SWEEP_NAMES:
      paper_table = sweeps.get_sweep(manifest["sweep"]).paper_table
    table, notes = build_table(runs, sweep_archs or None, paper_table)
    markdown = to_markdown(table, notes + warnings)
    written = architecture_plots(runs, out_dir)
  else:
    table, columns, notes = recipe_table(runs)
    markdown = to_markdown(table, notes + warnings, columns)
    written = recipe_plots(runs, out_dir)
  written += curves_plot(runs, out_dir)
  (out_dir / MARKDOWN_FILE).write_text(markdown)
  _WRITTEN[str(out_dir)] = [MARKDOWN_FILE, *written]
  return markdown


_WRITTEN: dict[str, list[str]] = {}


def written_files(out: str) -> list[str]:
  """The files the last `compare` into `out` wrote."""
  return _WRITTEN.get(str(epath.Path(out)), [])


def define_flags() -> None:
  """The flags of `mobilenet-compare`."""
  cli.define_root("The sweep's root: ROOT/<run>/results.json.")
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
