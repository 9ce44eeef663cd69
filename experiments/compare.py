r"""Compares finished runs (their results.json) with the MobileNet papers' tables.

  python -m experiments.compare --root=runs/table6
  python -m experiments.compare --root=gs://BUCKET/runs/grid --out=/tmp/grid_report

Reads every ROOT/*/results.json (written by mobilenet_jax/train/trainer.py at the end
of a run) and matches each run to the paper rows of the same architecture: model name,
width, depth and block, and input resolution, against the configs the rows of
experiments/paper_results.csv name. Writes to OUT (default ROOT):

  comparison.md                a markdown table, also printed: paper vs our top-1,
                               Mult-Adds and parameters; paper MobileNets without a
                               run are listed as "not run"
  accuracy_vs_mult_adds.png    top-1 vs Mult-Adds, log scale (the V1 paper's Figure 4)
  accuracy_vs_params.png       top-1 vs parameters, log scale (Figure 5)

Our top-1 is that of the EMA weights where the run kept them, else of the raw ones;
the table says which. Runs on another dataset than the paper's ImageNet (e.g.
--local_smoke runs on shapes10) are flagged: their accuracies are not comparable.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from absl import app, flags
from etils import epath

from experiments import paper, sweeps

PAPER_DATASET = "imagenet2012"
MARKDOWN_FILE = "comparison.md"
MULT_ADDS_PLOT = "accuracy_vs_mult_adds.png"
PARAMS_PLOT = "accuracy_vs_params.png"


@dataclasses.dataclass(frozen=True)
class RunResult:
  """The parts of one run's results.json that the comparison uses."""
  name: str  # The workdir's name, the sweep's run name.
  arch: tuple  # arch_key() of its config.
  top1: float  # Percent, as the papers print it.
  top1_source: str  # "EMA" or "raw".
  mult_adds_m: float
  params_m: float
  steps: int | None
  dataset: str

  @property
  def comparable(self) -> bool:
    return self.dataset == PAPER_DATASET


def arch_key(config: Mapping[str, Any]) -> tuple:
  """What identifies an architecture: (model name, width, depth, block, resolution).

  Works on a ConfigDict and on the config dict of a results.json alike.
  """
  model = config["model"]
  return (model["name"], round(float(model["width"]), 6), model.get("depth", "full"),
          model.get("block", "separable"), int(config["data"]["image_size"]))


def load_results(root: str) -> tuple[list[RunResult], list[str]]:
  """Every ROOT/*/results.json, by run name; also warnings about files left out."""
  runs, warnings = [], []
  for path in sorted(epath.Path(root).glob("*/results.json")):
    name = path.parent.name
    try:
      results = json.loads(path.read_text())
      final = results["final"]
      source = "EMA" if final.get("ema") else "raw"
      config = results["config"]
      runs.append(RunResult(
          name=name, arch=arch_key(config),
          top1=100.0 * float(final[source.lower()]["top1"]), top1_source=source,
          mult_adds_m=results["mult_adds"] / 1e6, params_m=results["params"] / 1e6,
          steps=results.get("steps"), dataset=config["data"]["name"]))
    except (KeyError, TypeError, ValueError) as e:  # A partial or foreign file.
      warnings.append(f"{path}: left out, not a finished run's results ({e!r})")
  return runs, warnings


def _paper_rows() -> list[tuple[paper.PaperResult, tuple]]:
  """The papers' MobileNet rows, each with the arch_key of its config."""
  return [(row, arch_key(paper.load_config(row.config)))
          for row in paper.load_paper_results() if row.is_mobilenet]


def _sweep_archs() -> dict[str, tuple]:
  """Run name -> arch_key of the paper config the sweeps give that name."""
  return {run.name: arch_key(paper.load_config(run.config))
          for run in sweeps.get_sweep("all")}


def _table_label(row: paper.PaperResult) -> str:
  return f"V1 Table {row.table}" if row.paper == "v1" else f"{row.paper.upper()} {row.table}"


def build_table(runs: list[RunResult]) -> tuple[list[dict[str, str]], list[str]]:
  """The comparison rows (column -> cell text) and the notes printed under them."""
  paper_rows = _paper_rows()
  paper_archs = {arch for _, arch in paper_rows}
  sweep_archs = _sweep_archs()
  # A run matches the paper rows of its architecture. A run that trained another
  # architecture than its name says (a --local_smoke run: width <= 0.25 at 32x32) is
  # matched by its name, and flagged.
  matched: dict[tuple, list[tuple[RunResult, bool]]] = {}
  unmatched = []
  for run in runs:
    if run.arch in paper_archs:
      matched.setdefault(run.arch, []).append((run, False))
    elif sweep_archs.get(run.name) in paper_archs:
      matched.setdefault(sweep_archs[run.name], []).append((run, True))
    else:
      unmatched.append(run)

  table, marks = [], set()
  for row, arch in paper_rows:
    base = {"paper table": _table_label(row), "model": row.model,
            "paper top-1": f"{row.top1:.1f}",
            "paper Mult-Adds (M)": f"{row.mult_adds_m:g}",
            "paper params (M)": f"{row.params_m:g}"}
    if arch not in matched:
      table.append({**base, "ours top-1": "not run", "delta": "", "ours Mult-Adds (M)": "",
                    "ours params (M)": "", "steps": "", "dataset": "", "run": ""})
      continue
    for run, other_arch in matched[arch]:
      cells = _run_cells(run, other_arch, marks)
      delta = f"{run.top1 - row.top1:+.1f}" if run.comparable else "n/a"
      table.append({**base, **cells, "delta": delta})
  for run in unmatched:
    table.append({"paper table": "-", "model": "(no paper row)", "paper top-1": "-",
                  "paper Mult-Adds (M)": "-", "paper params (M)": "-", "delta": "-",
                  **_run_cells(run, False, marks)})

  notes = ["Top-1 in percent on the evaluation split; ours is that of the EMA weights "
           "where the run kept them, else of the raw ones (in brackets). Delta = ours "
           "- paper, in points."]
  if "dataset" in marks:
    notes.append(f"† Not trained on the paper's dataset ({PAPER_DATASET}): its accuracy "
                 "is not comparable to the paper's, so no delta is given.")
  if "arch" in marks:
    notes.append("‡ Matched by its run name, but it trained a smaller architecture "
                 "(a --local_smoke run?): its Mult-Adds and params are its own.")
  if not runs:
    notes.append("No finished runs (no */results.json) under the root.")
  return table, notes


def _run_cells(run: RunResult, other_arch: bool, marks: set[str]) -> dict[str, str]:
  dataset = run.dataset
  if not run.comparable:
    dataset += " †"
    marks.add("dataset")
  name = run.name
  if other_arch:
    name += " ‡"
    marks.add("arch")
  return {"ours top-1": f"{run.top1:.1f} ({run.top1_source})",
          "ours Mult-Adds (M)": f"{run.mult_adds_m:.1f}",
          "ours params (M)": f"{run.params_m:.2f}",
          "steps": "" if run.steps is None else str(run.steps), "dataset": dataset,
          "run": name}


COLUMNS = ("paper table", "model", "paper top-1", "ours top-1", "delta",
           "paper Mult-Adds (M)", "ours Mult-Adds (M)", "paper params (M)",
           "ours params (M)", "steps", "dataset", "run")


def to_markdown(table: list[dict[str, str]], notes: list[str]) -> str:
  """The rows as a GitHub markdown table, with the notes below it."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in table]
  return "\n".join(lines + [""] + notes) + "\n"


def plot(runs: list[RunResult], path: epath.Path, *, x: str) -> None:
  """Top-1 against Mult-Adds (x="mult_adds_m") or params (x="params_m"), log x axis."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # No display on a TPU VM or in CI.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(7, 5))
  seen = set()
  paper_points = []
  for row in paper.load_paper_results():
    if row.is_mobilenet and row.config not in seen:  # Tables repeat rows.
      seen.add(row.config)
      paper_points.append((getattr(row, x), row.top1, row.model))
  ax.scatter([p[0] for p in paper_points], [p[1] for p in paper_points], marker="o",
             color="tab:blue", label="paper")
  for px, py, label in paper_points:
    ax.annotate(label, (px, py), fontsize=6, xytext=(3, 3), textcoords="offset points")
  for comparable, style in ((True, dict(marker="s", color="tab:red", label="ours")),
                            (False, dict(marker="x", color="tab:gray",
                                         label="ours, not ImageNet (not comparable)"))):
    group = [r for r in runs if r.comparable == comparable]
    if group:
      ax.scatter([getattr(r, x) for r in group], [r.top1 for r in group], **style)
      for r in group:
        ax.annotate(r.name, (getattr(r, x), r.top1), fontsize=6, color=style["color"],
                    xytext=(3, -8), textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("Mult-Adds (millions)" if x == "mult_adds_m" else "Parameters (millions)")
  ax.set_ylabel("Top-1 accuracy (%)")
  ax.set_title("Accuracy vs Mult-Adds (V1 paper, Figure 4)" if x == "mult_adds_m"
               else "Accuracy vs parameters (V1 paper, Figure 5)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)


def compare(root: str, out: str | None = None) -> str:
  """Writes comparison.md and the two plots to `out` (default `root`); returns the markdown."""
  runs, warnings = load_results(root)
  table, notes = build_table(runs)
  markdown = to_markdown(table, notes + warnings)
  out_dir = epath.Path(out or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / MARKDOWN_FILE).write_text(markdown)
  plot(runs, out_dir / MULT_ADDS_PLOT, x="mult_adds_m")
  plot(runs, out_dir / PARAMS_PLOT, x="params_m")
  return markdown


def main(argv):
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  out = _OUT.value or _ROOT.value
  print(compare(_ROOT.value, out))
  print(f"Wrote {MARKDOWN_FILE}, {MULT_ADDS_PLOT} and {PARAMS_PLOT} to {out}")


if __name__ == "__main__":
  _ROOT = flags.DEFINE_string("root", None, "The sweep's root: ROOT/<run>/results.json.")
  _OUT = flags.DEFINE_string("out", None, "Where the table and plots go; default ROOT.")
  flags.mark_flags_as_required(["root"])
  app.run(main)
