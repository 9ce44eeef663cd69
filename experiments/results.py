"""What a sweep's root holds, as `compare` sees it: finished runs, and every other
point with its state (not started, not finished, failed), never dropped silently.

A root is ROOT/manifest.json (when the launcher wrote one: the points it planned and
the paper point each stands for) plus ROOT/<run>/ run directories, read through
mobilenet_jax.rundir. A run is finished when its results.json parses; a truncated
or foreign results.json makes it "not finished", with the reason.
"""

from __future__ import annotations

import dataclasses
import json

from etils import epath

from mobilenet_jax.errors import UserError
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout
from mobilenet_jax.rundir import results as run_results

from . import manifest as manifest_lib, sweeps

PAPER_DATASET = "imagenet2012"


class RootError(UserError):
  """A root that is missing, empty or unreadable; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One finished run, as the comparison sees it."""
  name: str  # The workdir's name: the sweep's point name (plus "_seed<s>").
  workdir: str
  results: run_results.Results
  point_config: dict  # The config of the point it stands for (smoke, proxy: full size).
  stands_in: bool  # Trained a scaled-down or proxy version of `point_config`.

  @property
  def point(self) -> str:
    """The point's name, without the seed suffix."""
    return sweeps.seed_of(self.name)[0]

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

  @property
  def num_classes(self) -> int:
    return int(self.results.config["model"]["num_classes"])


@dataclasses.dataclass(frozen=True)
class Unfinished:
  """A planned or started run without readable results."""
  name: str
  state: str  # "not started", "not finished" or "failed".
  detail: str


@dataclasses.dataclass(frozen=True)
class Root:
  """Everything `compare` reads from a root."""
  runs: list[RunResult]
  unfinished: list[Unfinished]
  manifest: dict | None


def load_root(root: str) -> Root:
  """Reads a sweep's root; RootError if it does not exist or holds no runs."""
  path = epath.Path(root)
  if not path.is_dir():
    raise RootError(f"--root={root}: no such directory. Give the --root the sweep was "
                    "launched with (python -m experiments.launch --root=...).")
  manifest = _read_manifest(root)
  planned = {p["name"]: p for p in (manifest or {}).get("points", [])}
  found = sorted(child.name for child in path.iterdir() if layout.is_run_dir(child))
  names = list(planned) + [n for n in found if n not in planned]
  if not names:
    raise RootError(f"--root={root} holds no runs (no run directories, no "
                    f"{manifest_lib.MANIFEST_FILE}): nothing to compare. Launch a sweep "
                    "into it first, or check the path.")
  known = {p.name: p for p in sweeps.get_sweep("all").points}
  runs, unfinished = [], []
  for name in names:
    workdir = path / name
    try:
      results = run_results.read_results(workdir)
    except run_results.ResultsError as e:
      unfinished.append(_state(name, workdir, e))
      continue
    point = _point_config(name, results, planned.get(name, {}), known)
    stands_in = run_identity.architecture(point) != run_identity.architecture(results.config) or (
        point["data"]["name"] != results.config["data"]["name"])
    runs.append(RunResult(name, str(workdir), results, point, stands_in))
  return Root(runs, unfinished, manifest)


def _read_manifest(root: str) -> dict | None:
  try:
    return manifest_lib.read(root)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RootError(f"{epath.Path(root) / manifest_lib.MANIFEST_FILE} is not valid JSON "
                    f"({e}); restore it, or move it away to compare the run "
                    "directories alone.") from None


def _point_config(name, results, planned: dict, known: dict) -> dict:
  """The full-size point a run stands for: the manifest's word, else the sweep point
  of that name when the run trained another architecture, else its own config."""
  if "point_config" in planned:
    return planned["point_config"]
  base = sweeps.seed_of(name)[0]
  if base in known and run_identity.architecture(results.config) != run_identity.architecture(
      known[base].build()):
    return run_identity.config_dict(known[base].build())
  return results.config


def _state(name: str, workdir: epath.Path, error: Exception) -> Unfinished:
  """Why a run has no results: not started, failed (its log's error line), or not
  finished (stopped, running, or a results.json that does not parse)."""
  if not workdir.exists():
    return Unfinished(name, "not started", "no run directory")
  if layout.results_path(workdir).exists():
    return Unfinished(name, "not finished", str(error))
  error_line = _last_error_line(workdir)
  if error_line:
    return Unfinished(name, "failed", error_line)
  step = _last_step(workdir)
  return Unfinished(name, "not finished", "stopped or still running" + (
      f", last logged step {step}" if step is not None else ", no step logged yet"))


def _last_error_line(workdir: epath.Path) -> str | None:
  """The error a run's train.log ends with (its one `error:` line, or a traceback's
  last line), or None: the log is appended to by every attempt, so only its end
  tells whether the last attempt failed."""
  log = layout.log_path(workdir)
  if not log.exists():
    return None
  tail = [line for line in log.read_bytes().decode("utf-8", "replace").splitlines()[-40:]
          if line.strip()]
  if not tail:
    return None
  if tail[-1].startswith("error:"):
    return tail[-1]
  if any(line.startswith("Traceback (most recent call last)") for line in tail):
    return tail[-1].strip()
  return None


def _last_step(workdir: epath.Path) -> int | None:
  """The last step metrics.jsonl records; a torn last line is ignored."""
  path = layout.metrics_path(workdir)
  if not path.exists():
    return None
  for line in reversed(path.read_bytes().decode("utf-8", "replace").splitlines()):
    try:
      return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
      continue
  return None


def read_train_metrics(run: RunResult) -> list[dict]:
  """The run's training rows from metrics.jsonl, rows that do not parse (a torn last
  line) left out."""
  path = layout.metrics_path(run.workdir)
  if not path.exists():
    return []
  rows = []
  for line in path.read_bytes().decode("utf-8", "replace").splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and row.get("split") == "train":
      rows.append(row)
  return rows
