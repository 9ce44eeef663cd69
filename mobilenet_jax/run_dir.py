"""What a run directory (a training run's workdir) holds, and the one way to read it.

  WORKDIR/
    checkpoints/<step>/    Orbax checkpoints, each with the config (train/checkpointing.py)
    metrics.jsonl          one JSON object per logged step: {"step", "split", ...}
    results.json           written once, at the end of training: `Results` below
    train.log              the run's console output, when the launcher started it
    events.out.tfevents.*  TensorBoard

Everything that reads a finished run (experiments.compare and .launch, evaluate,
export, `mobilenet_jax.load`) goes through this module, so the layout and the results
schema are stated once. Paths may be local or `gs://...` (etils.epath).

A run's identity is its whole config, flattened to dotted keys, less the entries that
only choose kernels or bookkeeping (`identity`); `architecture` is the part of it that
the papers tabulate.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Mapping

import jax
import ml_collections
from etils import epath

from mobilenet_jax.errors import CheckpointError, UserError

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
# Version 1 is the layout the trainer wrote before the field existed; readers treat a
# file without "schema_version" as version 1.
SCHEMA_VERSION = 1
WEIGHTS = ("params", "batch_stats", "ema_params", "ema_batch_stats")

# Config entries that never change what a run computes: kernel choices (same
# parameters, same math), where the data lives, and bookkeeping cadences.
NON_IDENTITY_KEYS = frozenset({
    "model.depthwise_impl", "model.pointwise_impl", "data.data_dir",
    "data.fused_decode_crop",  # The same crops, decoded the faster way.
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "keep_best_checkpoint", "eval_every_steps", "eval_batch_size"})
# Model entries a checkpoint and the run resuming it may disagree on: same parameters,
# other kernels. (Which other entries may differ: see `_structural_config`.)
_RUNTIME_ONLY_MODEL_KEYS = ("model.depthwise_impl", "model.pointwise_impl",
                            # Chosen from the run length when unset (train/batchnorm.py).
                            "model.bn_momentum")


class ResultsError(UserError):
  """A results.json that is missing, partial, or of an unknown schema version."""


def _path(workdir) -> epath.Path:
  return epath.Path(str(workdir))


def results_path(workdir) -> epath.Path:
  """WORKDIR/results.json."""
  return _path(workdir) / RESULTS_FILE


def metrics_path(workdir) -> epath.Path:
  """WORKDIR/metrics.jsonl."""
  return _path(workdir) / METRICS_FILE


def log_path(workdir) -> epath.Path:
  """WORKDIR/train.log."""
  return _path(workdir) / LOG_FILE


def is_finished(workdir) -> bool:
  """Whether the run wrote its results (it trained to its last step)."""
  return results_path(workdir).exists()


# ------------------------------------------------------------------ results schema

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
             eval_split: str = "", input_bound: dict | None = None) -> "Results":
    """The results of the run of `config` that just finished in this process."""
    return cls(config=config_dict(config),
               final={k: EvalMetrics(**dict(v)) for k, v in final.items()},
               steps=int(steps), params=costs.params, mult_adds=costs.mult_adds,
               trainable_params=costs.trainable_params, wall_time_s=wall_time_s,
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
  def from_json(cls, data: Any, source: str = RESULTS_FILE) -> "Results":
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
  """Writes WORKDIR/results.json (call on process 0 only)."""
  results_path(workdir).write_text(json.dumps(results.to_json(), indent=2))


def read_results(workdir) -> Results:
  """The results of the finished run in `workdir`; ResultsError if there are none."""
  path = results_path(workdir)
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise ResultsError(f"{path} does not exist: the run has not finished.") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ResultsError(f"{path} is not valid JSON ({e}).") from None
  return Results.from_json(data, str(path))


def read_metrics(workdir, split: str | None = None) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl (of `split` only, if given), in order."""
  path = metrics_path(workdir)
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if split is None or r.get("split") == split]


def read_config(workdir, step: int | None = None) -> ml_collections.ConfigDict:
  """The config the run in `workdir` trained with: from its results if it finished
  (and no `step` is asked for), else from its checkpoint."""
  if step is None and is_finished(workdir):
    return ml_collections.ConfigDict(read_results(workdir).config)
  from mobilenet_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.read_config(str(workdir), step)


# ------------------------------------------------------------------ identity

def config_dict(config) -> dict:
  """A ConfigDict as the plain dict its JSON gives (tuples become lists, field
  references their values), so stored and built configs compare like for like."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def flatten(tree: Mapping, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def identity(config) -> dict:
  """The run's identity: every flattened config entry that changes what it computes."""
  return {k: v for k, v in flatten(config_dict(config)).items()
          if k not in NON_IDENTITY_KEYS}


def differing_keys(configs: Iterable) -> list[str]:
  """The identity keys whose values are not the same in all of `configs`, sorted."""
  identities = [identity(c) for c in configs]
  keys = set().union(*identities) if identities else set()
  return sorted(k for k in keys
                if len({json.dumps(i.get(k, "<unset>"), sort_keys=True)
                        for i in identities}) > 1)


def architecture(config) -> tuple:
  """What identifies an architecture: (model name, width, depth, block, resolution).

  Works on a ConfigDict and on the config dict of a results.json alike.
  """
  model = config["model"]
  return (model["name"], round(float(model["width"]), 6), model.get("depth", "full"),
          model.get("block", "separable"), int(config["data"]["image_size"]))


def architecture_name(config) -> str:
  """A short name of `architecture(config)`, e.g. "v1_w0.5_r160" or "v1_w1_r224_shallow"."""
  name, width, depth, block, res = architecture(config)
  text = f"{name.replace('mobilenet_', '')}_w{width:g}_r{res}"
  if depth != "full":
    text += f"_{depth}"
  if block != "separable":
    text += f"_{block}"
  return text


ARCHITECTURE_KEYS = ("model.name", "model.width", "model.depth", "model.block",
                     "data.image_size")


# ------------------------------------------------------------------ compatibility

def _structural_config(config: dict) -> dict:
  """The config entries that decide the TrainState's tree structure and shapes."""
  flat = flatten(config)
  out = {k: v for k, v in flat.items()
         if k.startswith("model.") and k not in _RUNTIME_ONLY_MODEL_KEYS}
  get = flat.get
  out["staleness"] = get("staleness", 0)
  out["optimizer.name"] = get("optimizer.name")
  # On/off switches that add or remove optimizer (or EMA) state.
  out["ema_decay (on)"] = bool(get("ema_decay", 0))
  out["optimizer.momentum (on)"] = bool(get("optimizer.momentum", 0))
  out["optimizer.grad_clip_norm (on)"] = bool(get("optimizer.grad_clip_norm", 0))
  out["weight_decay (on)"] = bool(get("weight_decay", 0))
  out["depthwise_weight_decay_mult (on)"] = bool(get("depthwise_weight_decay_mult", 0))
  out["init_from.freeze_backbone"] = bool(get("init_from.freeze_backbone", False))
  return out


def config_mismatches(stored: dict, current: dict) -> list[str]:
  """'key: old (checkpoint) vs new (now)' for each structural difference."""
  old, new = _structural_config(stored), _structural_config(current)
  return [f"{key}: {old.get(key)!r} (checkpoint) vs {new.get(key)!r} (now)"
          for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def check_compatible(config) -> Callable[[dict, str], None]:
  """A `check_config` for `Checkpointer.restore_or_initial`: raises CheckpointError
  if the checkpoint at `path` was written with a config that builds another state."""
  current = config_dict(config)

  def check(stored: dict, path: str) -> None:
    mismatches = config_mismatches(stored, current)
    if mismatches:
      raise CheckpointError(
          f"Checkpoint {path} was written with a different config: "
          f"{'; '.join(mismatches)}. Use a new --workdir or the run's original config.")

  return check


# ------------------------------------------------------------------ weights

def restore_weights(workdir, step: int | None = None,
                    sharding: jax.sharding.Sharding | None = None
                    ) -> tuple[dict, int, ml_collections.ConfigDict]:
  """Only the weights of a checkpoint, from the checkpoint alone.

  Returns ({"params", "batch_stats", "ema_params", "ema_batch_stats"}, step, config).
  The optimizer state is not read, so this works whatever optimizer the run used.
  Arrays are placed with `sharding`, by default whole on every device.
  """
  # Imported here: reading results and configs needs neither Orbax nor a mesh.
  # pylint: disable-next=g-import-not-at-top
  from mobilenet_jax.train import checkpointing, sharding as sharding_lib
  weights, step, config = checkpointing.restore_subtrees(
      str(workdir), WEIGHTS, sharding or sharding_lib.replicated_everywhere(), step)
  return weights, step, ml_collections.ConfigDict(config)
