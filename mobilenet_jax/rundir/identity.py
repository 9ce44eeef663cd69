"""A run's identity (what it computes) and which configs may resume its checkpoints.

A run's identity is its whole config, flattened to dotted keys, less the entries that
only choose kernels, where the data lives, or bookkeeping cadences (`identity`);
`architecture` is the part of it that the papers tabulate. Works on a ConfigDict and
on the config dict of a results.json alike.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Mapping

import ml_collections

from mobilenet_jax.errors import CheckpointError

# Config entries that never change what a run computes: kernel choices (same
# parameters, same math), where the data lives, and bookkeeping cadences.
NON_IDENTITY_KEYS = frozenset({
    "model.depthwise_impl", "model.pointwise_impl", "model.spatial_conv_impl",
    "data.data_dir",
    "data.fused_decode_crop",  # The same crops, decoded the faster way.
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "keep_best_checkpoint", "eval_every_steps", "eval_batch_size"})
# Model entries a checkpoint and the run resuming it may disagree on: same parameters,
# other kernels. (Which other entries may differ: see `_structural_config`.)
_RUNTIME_ONLY_MODEL_KEYS = ("model.depthwise_impl", "model.pointwise_impl",
                            "model.spatial_conv_impl",
                            # Chosen from the run length when unset (train/batchnorm.py).
                            "model.bn_momentum")
ARCHITECTURE_KEYS = ("model.name", "model.width", "model.depth", "model.block",
                     "data.image_size")


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
  """What identifies an architecture: (model name, width, depth, block, resolution)."""
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
  """A `check_config` for the checkpoint readers: raises CheckpointError if the
  checkpoint at `path` was written with a config that builds another state."""
  current = config_dict(config)

  def check(stored: dict, path: str) -> None:
    mismatches = config_mismatches(stored, current)
    if mismatches:
      raise CheckpointError(
          f"Checkpoint {path} was written with a different config: "
          f"{'; '.join(mismatches)}. Use a new --workdir or the run's original config.")

  return check
