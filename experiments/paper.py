"""The MobileNet papers' published numbers (experiments/paper_results.csv) as records.

Source: V1 paper (arXiv:1704.04861) Tables 4 to 9 and the V2 paper's (arXiv:1801.04381)
headline. Each MobileNet row names the config (file and
argument string under configs/) that reproduces its architecture; rows of other
networks have none.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

from mobilenet_jax import config_files

RESULTS_CSV = pathlib.Path(__file__).with_name("paper_results.csv")


@dataclasses.dataclass(frozen=True)
class PaperResult:
  """One row of a paper table: ImageNet top-1, million Mult-Adds, million parameters."""
  paper: str
  table: str
  model: str
  config: str  # "mobilenet_v1.py:width=0.5,res=160"; empty for other networks.
  top1: float
  mult_adds_m: float
  params_m: float
  # How far an exact count may be from the printed figure: half a unit of the last
  # printed digit, or 1M for rows the paper scaled by rho^2 before rounding.
  mult_adds_tol_m: float | None
  params_tol_m: float | None
  classifier_counted: bool  # False where the paper's Mult-Adds leave the classifier out.
  note: str

  @property
  def is_mobilenet(self) -> bool:
    return bool(self.config)


def load_paper_results(path: pathlib.Path = RESULTS_CSV) -> list[PaperResult]:
  """Every row of the published tables, in the papers' order."""
  with open(path, newline="") as f:
    return [PaperResult(paper=row["paper"], table=row["table"], model=row["model"],
                        config=row["config"], top1=float(row["top1"]),
                        mult_adds_m=float(row["mult_adds_m"]),
                        params_m=float(row["params_m"]),
                        mult_adds_tol_m=_optional_float(row["mult_adds_tol_m"]),
                        params_tol_m=_optional_float(row["params_tol_m"]),
                        classifier_counted=row["classifier_counted"] != "false",
                        note=row["note"])
            for row in csv.DictReader(f)]


def _optional_float(text: str) -> float | None:
  return float(text) if text else None


def load_config(config_spec: str):
  """Builds the ConfigDict for "file.py:args" from the shipped config files."""
  return config_files.get_config(config_spec)
