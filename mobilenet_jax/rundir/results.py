"""results.json: what a finished run reports, its schema, and reading it safely.

A run is finished when its results.json parses as this schema: a truncated or foreign
file is "not finished" (`is_finished`), never a crash. The file is written to a
temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax
import ml_collections

from mobilenet_jax.errors import UserError
from mobilenet_jax.rundir import identity, layout

# Version 1 is the layout the trainer wrote before the field existed; readers treat a
# file without "schema_version" as version 1.
SCHEMA_VERSION = 1


class ResultsError(UserError):
  """A results.json that is missing, partial, or of an unknown schema version."""


@dataclasses.dataclass(frozen=True)
class EvalMetrics:
  """One pass over the eval split: mean loss, top-1 and top-5 as fractions."""
  loss: float
  top1: float
  top5: float
  num_examples: int


@dataclasses.dataclass(frozen=True)
class Results:
  """results.json: what a finished run reports. `final` maps "raw" and "ema" (the
  moving average of the weights) to their last evaluation."""
  config: dict
  final: dict[str, EvalMetrics]
  steps: int
  params: int  # Conv + classifier weights: the papers' count.
  mult_adds: int
  # What the optimizer updated: BatchNorm's scales and offsets too (so more than
  # `params`), or the classifier's alone when the backbone was frozen.
  trainable_params: int
  wall_time_s: float
  train_images_per_sec: float
  device_count: int
  process_count: int
  platform: str
  eval_split: str = ""  # The split `final` was measured on, as the data pipeline named it.
  # Per-host input pipeline and train step rates at the start of the run and which one
  # bounds it (train/input_bound.py); None in files written before it was measured.
  input_bound: dict | None = None
  schema_version: int = SCHEMA_VERSION

  @classmethod
  def of_run(cls, config: ml_collections.ConfigDict, final: Mapping[str, Mapping],
             steps: int, costs, wall_time_s: float, train_images_per_sec: float,
             trainable_params: int, eval_split: str = "",
             input_bound: dict | None = None) -> "Results":
    """The results of the run of `config` that just finished in this process;
    `trainable_params` is what its optimizer updated (BatchNorm's parameters included;
    only the classifier's when the backbone was frozen)."""
    return cls(config=identity.config_dict(config),
               final={k: EvalMetrics(**dict(v)) for k, v in final.items()},
               steps=int(steps), params=costs.params, mult_adds=costs.mult_adds,
               trainable_params=trainable_params, wall_time_s=wall_time_s,
               train_images_per_sec=train_images_per_sec,
               device_count=jax.device_count(), process_count=jax.process_count(),
               platform=jax.default_backend(), eval_split=eval_split,
               input_bound=input_bound)

  @property
  def top1(self) -> tuple[float, str]:
    """(top-1, "EMA" or "raw"): the EMA weights' where the run kept a moving average."""
    if "ema" in self.final and self.config.get("ema_decay", 0):
      return self.final["ema"].top1, "EMA"
    return self.final["raw"].top1, "raw"

  @property
  def loss(self) -> float:
    """The eval loss of the weights `top1` reports."""
    return self.final["ema" if self.top1[1] == "EMA" else "raw"].loss

  def to_json(self) -> dict:
    """A plain dict for json.dump (the results.json layout)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Any, source: str = layout.RESULTS_FILE) -> "Results":
    """Parses a results.json dict; ResultsError naming `source` if it is not one."""
    if not isinstance(data, dict):
      raise ResultsError(f"{source}: not a results object.")
    version = data.get("schema_version", 1)
    if version != SCHEMA_VERSION:
      raise ResultsError(f"{source} has results schema version {version}; this code "
                         f"reads version {SCHEMA_VERSION}.")
    names = [f.name for f in dataclasses.fields(cls)]
    # Fields with a default (eval_split, input_bound, schema_version) may be absent
    # from older files.
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in data and f.default is dataclasses.MISSING]
    if missing:
      raise ResultsError(f"{source} is not a finished run's results: no "
                         f"{', '.join(missing)}.")
    try:
      final = {k: EvalMetrics(**{f.name: v[f.name]
                                 for f in dataclasses.fields(EvalMetrics)})
               for k, v in data["final"].items()}
      if "raw" not in final:
        raise KeyError("final.raw")
    except (KeyError, TypeError, AttributeError) as e:
      raise ResultsError(f"{source}: malformed final metrics ({e!r}).") from None
    return cls(**{**{n: data[n] for n in names if n in data}, "final": final})


def write_results(workdir, results: Results) -> None:
  """Writes WORKDIR/results.json atomically (call on process 0 only)."""
  target = layout.results_path(workdir)
  partial = target.parent / (target.name + ".partial")
  partial.write_text(json.dumps(results.to_json(), indent=2))
  partial.replace(target)


def read_results(workdir) -> Results:
  """The results of the finished run in `workdir`; ResultsError if there are none."""
  path = layout.results_path(workdir)
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise ResultsError(f"{path} does not exist: the run has not finished.") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ResultsError(f"{path} is not valid JSON ({e}): a truncated file; the run "
                       "counts as unfinished (delete the file and rerun it).") from None
  return Results.from_json(data, str(path))


def is_finished(workdir) -> bool:
  """Whether the run wrote results that parse (a torn or foreign file: False)."""
  try:
    read_results(workdir)
  except ResultsError:
    return False
  return True
