"""Named sweeps that reproduce the MobileNet papers' ablations, one run per config.

Every table sweep is read off experiments/paper_results.csv (its MobileNet rows name
the config that reproduces each architecture), so the sweeps and the published
numbers cannot drift apart. Only the width x resolution grid of the V1 paper's
Figures 4 and 5, whose points the CSV does not list, is built here.

  table4  Conv MobileNet (full convolutions) vs MobileNet (separable), Table 4
  table5  0.75 MobileNet vs Shallow MobileNet, Table 5
  table6  width 1, 0.75, 0.5, 0.25 at 224, Table 6
  table7  resolution 224, 192, 160, 128 at width 1, Table 7
  table9  0.50 MobileNet-160, Table 9
  grid    width {1, 0.75, 0.5, 0.25} x resolution {224, 192, 160, 128}, Figures 4/5
  v2      MobileNetV2 1.0-224, the V2 paper's headline
  all     every run above, each architecture once

  python -m experiments.sweeps --sweep=table6   # lists the runs
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

from experiments import paper

# The V1 paper's Figures 4 and 5: every width multiplier at every resolution.
GRID_WIDTHS = (1.0, 0.75, 0.5, 0.25)
GRID_RESOLUTIONS = (224, 192, 160, 128)

# Sweep name -> (paper, table) of the CSV rows it reproduces.
_TABLE_SWEEPS = {
    "table4": ("v1", "4"),
    "table5": ("v1", "5"),
    "table6": ("v1", "6"),
    "table7": ("v1", "7"),
    "table9": ("v1", "9"),
    "v2": ("v2", "headline"),
}
SWEEP_NAMES = (*_TABLE_SWEEPS, "grid", "all")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a short unique name (its workdir) and its config spec."""
  name: str  # "v1_w0.5_r160"
  config: str  # "mobilenet_v1.py:width=0.5,res=160", relative to configs/.


def run_name(config_spec: str) -> str:
  """A short name for the architecture of `config_spec`, e.g. "v1_w0.5_r160".

  Read off the built config (not the spec text) so that two spellings of the same
  architecture get the same name.
  """
  config = paper.load_config(config_spec)
  model = config.model
  family = model.name.replace("mobilenet_", "")
  name = f"{family}_w{model.width:g}_r{config.data.image_size}"
  if model.get("depth", "full") != "full":
    name += f"_{model.depth}"
  if model.get("block", "separable") != "separable":
    name += f"_{model.block}"
  return name


def v1_spec(width: float, res: int) -> str:
  """The V1 config spec for one grid point, written like the CSV's (defaults left out)."""
  args = []
  if width != 1.0:
    args.append(f"width={width:g}")
  if res != 224:
    args.append(f"res={res}")
  return "mobilenet_v1.py" + (":" + ",".join(args) if args else "")


def with_args(config_spec: str, *args: str) -> str:
  """`config_spec` with `args` ("runlocal", "batch=64") appended to its argument string."""
  if not args:
    return config_spec
  file_name, sep, arg = config_spec.partition(":")
  return file_name + ":" + ",".join(([arg] if sep and arg else []) + list(args))


def get_sweep(name: str) -> list[Run]:
  """The runs of sweep `name`, in the paper's order, each architecture once.

  Raises:
    ValueError: for an unknown name; the message lists the known ones.
  """
  if name not in SWEEP_NAMES:
    raise ValueError(f"Unknown sweep {name!r}; known sweeps: {', '.join(SWEEP_NAMES)}.")
  return list(_sweep(name))


@functools.cache
def _sweep(name: str) -> tuple[Run, ...]:
  if name == "all":
    specs = [run.config for sweep in SWEEP_NAMES if sweep != "all" for run in _sweep(sweep)]
  elif name == "grid":
    specs = [v1_spec(w, r) for w, r in itertools.product(GRID_WIDTHS, GRID_RESOLUTIONS)]
  else:
    paper_name, table = _TABLE_SWEEPS[name]
    specs = [row.config for row in paper.load_paper_results()
             if row.is_mobilenet and (row.paper, row.table) == (paper_name, table)]
  runs = {}
  for spec in specs:
    # Tables repeat rows (1.0 MobileNet-224 is in Tables 4, 6 and 7): train it once.
    runs.setdefault(run_name(spec), Run(run_name(spec), spec))
  return tuple(runs.values())


def main(argv):
  """absl entry point: prints the runs of --sweep."""
  del argv
  for run in get_sweep(_SWEEP.value):
    print(f"{run.name:<24} {run.config}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  _SWEEP = flags.DEFINE_enum("sweep", "all", SWEEP_NAMES, "Which sweep to list.")
  app.run(main)
