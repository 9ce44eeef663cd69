"""Named sweeps, as data: each point is a config spec plus `--config.*` overrides.

Architecture sweeps (the papers' tables, read off experiments/paper_results.csv so
that sweeps and published numbers cannot drift apart, and the width x resolution
grids of experiments/slim_checkpoints.csv):

  table4  Conv MobileNet (full convolutions) vs MobileNet (separable), V1 Table 4
  table5  0.75 MobileNet vs Shallow MobileNet, Table 5
  table6  width 1, 0.75, 0.5, 0.25 at 224, Table 6
  table7  resolution 224, 192, 160, 128 at width 1, Table 7
  table9  0.50 MobileNet-160, Table 9
  grid    V1 width {1, 0.75, 0.5, 0.25} x resolution {224, 192, 160, 128}, Figures 4/5
  v2      MobileNetV2 1.0-224, the V2 paper's headline
  v2grid  V2 width {0.35, 0.5, 0.75, 1.0, 1.3, 1.4} x resolution {96, ..., 224}
  all     table4 to table9, grid and v2: every paper architecture once

Recipe sweeps (MobileNet V1 1.0-224 with the TPU reference recipe, batch 1024):

  async   staleness tau {0, 1, 2, 4, 8} x virtual workers {1, 4, 16} x
          lr.staleness_scaling {none, inverse} (Zhang et al. 2016, arXiv:1511.05950).
          Without staleness neither workers nor scaling change the computation
          (mobilenet_jax/train/async_emulation.py), so tau=0 is one point; lr/max(1, d)
          equals lr for every delay d <= 1, so inverse starts at tau=2: 22 points.
  batch   global batch 256 ... 16384 with the linear learning-rate scaling the
          configs already apply (lr = base x batch / 256) and 5 epochs of gradual
          warmup (Goyal et al. 2017, "Accurate, Large Minibatch SGD", arXiv:1706.02677),
          at most 2048 examples per micro-batch (grad_accum_steps above that)

A point's name is its architecture ("v1_w0.5_r160") plus every other setting that
both differs from its config file's defaults and varies within the sweep
("v1_w1_r224_tau4_workers16_lrscale-inverse"). Points with the same identity (the
tables repeat 1.0 MobileNet-224) are trained once; two distinct points never share a
name (checked when the sweep is built). A new sweep is a `_register` call.

  python -m experiments.sweeps --sweep=async   # lists the points and their overrides

Installed with pip, the same program is `mobilenet-sweeps`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Iterable, Mapping

from absl import flags

from mobilenet_jax import cli
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import identity as run_identity

from . import paper, references

Override = tuple[str, Any]


@dataclasses.dataclass(frozen=True)
class Point:
  """One training run: its name (its workdir), config spec and overrides."""
  name: str
  config: str  # "mobilenet_v1.py:width=0.5,res=160", relative to configs/.
  overrides: tuple[Override, ...] = ()
  # The paper-size point this one trains a stand-in for (a --proxy point), if any.
  full_size: "Point | None" = None

  def full_size_config(self):
    """The config of the point it stands for: its own unless it is a proxy."""
    return (self.full_size or self).build()

  def build(self, extra: Iterable[Override] = ()):
    """The ConfigDict this point trains with (plus `extra` overrides)."""
    return apply_overrides(paper.load_config(self.config), (*self.overrides, *extra))

  def args(self) -> list[str]:
    """The overrides as main.py flags: ["--config.staleness=4", ...]."""
    return override_args(self.overrides)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A named list of points; `kind` is "architecture" or "recipe"."""
  name: str
  kind: str
  description: str
  points: tuple[Point, ...]
  paper_table: tuple[str, str] | None = None  # ("v1", "6"): the rows it reproduces.


def override_args(overrides: Iterable[Override]) -> list[str]:
  """`--config.KEY=VALUE` for each override, as ml_collections' config flags read them."""
  return [f"--config.{key}={_flag_value(value)}" for key, value in overrides]


def _flag_value(value) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return repr(value)
  return str(value)


def apply_overrides(config, overrides: Iterable[Override]):
  """Sets dotted keys of `config` in place, cast to each field's type; returns it."""
  for key, value in overrides:
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise KeyError(f"Override {key}={value!r}: the config has no {key!r}.")
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[leaf] = value
  return config


# Short names for the settings that name points; other keys use their last part.
_ALIASES = {"staleness": "tau", "num_workers": "workers", "global_batch_size": "batch",
            "grad_accum_steps": "accum", "lr.staleness_scaling": "lrscale",
            "optimizer.name": "opt", "model.dtype": "dtype", "lr.warmup_epochs": "warmup",
            "lr.base": "lr", "worker_delays": "delays"}


def _label(key: str, value) -> str:
  alias = _ALIASES.get(key, key.rsplit(".", 1)[-1])
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return f"{alias}{value:g}"
  return f"{alias}-{value}"


def _spec_file(spec: str) -> str:
  return spec.partition(":")[0]


@functools.cache
def _file_defaults(file_name: str) -> dict:
  return run_identity.identity(paper.load_config(file_name))


def _name_points(specs: list[tuple[str, tuple[Override, ...]]]) -> tuple[Point, ...]:
  """Points with names from what differs; identical points once; unique names."""
  unique: dict[str, tuple[str, tuple[Override, ...], dict]] = {}
  for spec, overrides in specs:
    ident = run_identity.identity(apply_overrides(paper.load_config(spec), overrides))
    unique.setdefault(repr(sorted(ident.items())), (spec, overrides, ident))
  entries = list(unique.values())
  varying = set(run_identity.differing_keys([e[2] for e in entries])) - set(
      run_identity.ARCHITECTURE_KEYS)
  points, names = [], {}
  for spec, overrides, ident in entries:
    defaults = _file_defaults(_spec_file(spec))
    order = [k for k, _ in overrides] + sorted(ident)
    keys = [k for k in dict.fromkeys(order) if k in varying
            and (ident.get(k) != defaults.get(k) or k in dict(overrides))]
    name = "_".join([run_identity.architecture_name(ident_to_nested(ident))]
                    + [_label(k, ident[k]) for k in keys])
    if name in names:
      raise ValueError(f"Sweep points {names[name]} and {(spec, overrides)} differ but "
                       f"would both be named {name!r}.")
    names[name] = (spec, overrides)
    points.append(Point(name, spec, tuple(overrides)))
  return tuple(points)


def ident_to_nested(flat: Mapping[str, Any]) -> dict:
  """{"a.b": 1} -> {"a": {"b": 1}}."""
  nested: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split(".")
    node = nested
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return nested


def product(spec: str, axes: Mapping[str, Iterable]) -> list[tuple[str, tuple]]:
  """(spec, overrides) for every combination of the values of `axes` (key -> values)."""
  keys = list(axes)
  return [(spec, tuple(zip(keys, values)))
          for values in itertools.product(*(axes[k] for k in keys))]


# ------------------------------------------------------------------ definitions

def v1_spec(width: float, res: int) -> str:
  """The V1 config spec for one grid point, written like the CSV's (defaults left out)."""
  return _spec("mobilenet_v1.py", width, res)


def v2_spec(width: float, res: int) -> str:
  """The V2 config spec for one grid point."""
  return _spec("mobilenet_v2.py", width, res)


def _spec(file_name: str, width: float, res: int) -> str:
  args = ([f"width={width:g}"] if width != 1.0 else []) + (
      [f"res={res}"] if res != 224 else [])
  return file_name + (":" + ",".join(args) if args else "")


def _table(paper_name: str, table: str) -> list[tuple[str, tuple]]:
  return [(row.config, ()) for row in paper.load_paper_results()
          if row.is_mobilenet and (row.paper, row.table) == (paper_name, table)]


def _grid(family: str) -> list[tuple[str, tuple]]:
  spec = v1_spec if family == "v1" else v2_spec
  widths, resolutions = references.grid(family)
  return [(spec(w, r), ()) for w, r in itertools.product(widths, resolutions)]


ASYNC_STALENESS = (0, 1, 2, 4, 8)
ASYNC_WORKERS = (1, 4, 16)
BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
MAX_MICRO_BATCH = 2048  # Per update step of one v3-8/v4-8 slice at 224x224, float32.
GOYAL_WARMUP_EPOCHS = 5.0  # Goyal et al. 2017, section 2.2: gradual warmup, 5 epochs.


def _async() -> list[tuple[str, tuple]]:
  synchronous = [("mobilenet_v1.py", (("staleness", 0), ("num_workers", 1),
                                      ("lr.staleness_scaling", "none")))]
  # Delays are at most tau, and lr / max(1, d) is lr for d <= 1: at tau = 1 the
  # inverse scaling changes nothing, so it starts at tau = 2.
  return synchronous + [
      point for point in product("mobilenet_v1.py", {
          "staleness": ASYNC_STALENESS[1:], "num_workers": ASYNC_WORKERS,
          "lr.staleness_scaling": ("none", "inverse")})
      if not (dict(point[1])["staleness"] == 1
              and dict(point[1])["lr.staleness_scaling"] == "inverse")]


def _batch() -> list[tuple[str, tuple]]:
  return [("mobilenet_v1.py", (("global_batch_size", b),
                               ("grad_accum_steps", max(1, b // MAX_MICRO_BATCH)),
                               ("lr.warmup_epochs", GOYAL_WARMUP_EPOCHS)))
          for b in BATCH_SIZES]


SEED_SUFFIX = "_seed"


def with_seeds(points: Iterable[Point], seeds: int) -> tuple[Point, ...]:
  """Every point trained with seeds 0 .. seeds-1, seed by seed (one of each point
  first, so a sweep stopped half-way has every point once).

  Seed 0 is the point itself, name and all, so runs finished before seeds were an
  axis count; seed s > 0 adds `("seed", s)` and the suffix "_seed<s>".
  """
  points = tuple(points)
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds}: need at least 1 seed per point.")
  seeded = [p.name for p in points if "seed" in dict(p.overrides)]
  if seeds > 1 and seeded:
    raise ConfigError(f"Point {seeded[0]} already sets its seed; --seeds would train "
                     "it more than once with the same one.")
  return points + tuple(
      dataclasses.replace(p, name=f"{p.name}{SEED_SUFFIX}{s}",
                          overrides=(*p.overrides, ("seed", s)))
      for s in range(1, seeds) for p in points)


def seed_of(name: str) -> tuple[str, int]:
  """(point name, seed) of a run's name: "v1_w1_r224_seed2" -> ("v1_w1_r224", 2)."""
  base, sep, seed = name.rpartition(SEED_SUFFIX)
  if sep and seed.isdigit():
    return base, int(seed)
  return name, 0


_DEFINITIONS: dict[str, tuple] = {}


def _register(name: str, kind: str, description: str, points: Callable[[], list],
              paper_table: tuple[str, str] | None = None):
  _DEFINITIONS[name] = (kind, description, points, paper_table)


def _register_table(name: str, paper_name: str, table: str):
  label = f"V1 Table {table}" if paper_name == "v1" else f"{paper_name.upper()} {table}"
  _register(name, "architecture", label, lambda: _table(paper_name, table),
            (paper_name, table))


_register_table("table4", "v1", "4")
_register_table("table5", "v1", "5")
_register_table("table6", "v1", "6")
_register_table("table7", "v1", "7")
_register_table("table9", "v1", "9")
_register("grid", "architecture", "V1 Figures 4/5 grid", lambda: _grid("v1"))
_register_table("v2", "v2", "headline")
_register("v2grid", "architecture", "V2 released-checkpoint grid", lambda: _grid("v2"))
_register("all", "architecture", "every paper architecture", lambda: [
    s for n in ("table4", "table5", "table6", "table7", "table9", "grid", "v2")
    for s in _DEFINITIONS[n][2]()])
_register("async", "recipe", "staleness x workers x staleness-aware lr", _async)
_register("batch", "recipe", "large-batch linear scaling + warmup", _batch)

SWEEP_NAMES = tuple(_DEFINITIONS)


def get_sweep(name: str) -> Sweep:
  """The sweep `name`.

  Raises:
    ValueError: for an unknown name; the message lists the known ones.
  """
  if name not in _DEFINITIONS:
    raise ValueError(f"Unknown sweep {name!r}; known sweeps: {', '.join(SWEEP_NAMES)}.")
  return _build(name)


@functools.cache
def _build(name: str) -> Sweep:
  kind, description, points, paper_table = _DEFINITIONS[name]
  return Sweep(name, kind, description, _name_points(points()), paper_table)


def define_flags() -> None:
  """The flags of `mobilenet-sweeps`."""
  flags.DEFINE_enum("sweep", "all", SWEEP_NAMES, "Which sweep to list.")


def main(argv):
  """absl entry point: prints the points of --sweep."""
  del argv
  sweep = get_sweep(flags.FLAGS.sweep)
  print(f"{sweep.name}: {sweep.description} ({sweep.kind}, {len(sweep.points)} points)")
  for point in sweep.points:
    print(f"{point.name:<44} {point.config} {' '.join(point.args())}")


def console_main():
  """The `mobilenet-sweeps` console script (and `python -m experiments.sweeps`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
