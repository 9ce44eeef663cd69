"""Starting from another run's weights (`config.init_from`) and freezing the backbone.

* `init_from(config, state)`: the weights of the run in `config.init_from.workdir`
  (or their moving average, with `init_from.ema`) replace the fresh ones in `state`
  (all of them, or all but the classifier with `backbone_only`, so the class count
  may differ). The optimizer state, step and RNG stay fresh; the EMA and the stale
  buffer restart from the loaded weights.
* `freeze_backbone`: `freeze(optimizer, trainable_mask(config, params))` zeroes the
  updates of every parameter outside the classifier. BatchNorm statistics are not
  parameters: the train step must keep the old backbone statistics with
  `keep_frozen_batch_stats` after the forward pass. With `init_from.freeze_bn` (the
  default) the frozen backbone's BatchNorm also normalizes with its running
  statistics in training, as in Keras' transfer recipe, so training and evaluation
  see the same network; with freeze_bn=False it normalizes with batch statistics
  ("BN in train mode, statistics frozen").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mobilenet_jax.rundir import readers
from mobilenet_jax.errors import CheckpointError

PyTree = Any

CLASSIFIER = "classifier"  # The head's module name in every MobileNet.


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def is_classifier(path) -> bool:
  """True for a variable under the classifier (the only head a MobileNet has)."""
  return bool(path) and str(getattr(path[0], "key", path[0])) == CLASSIFIER


def _lookup(tree: dict, path):
  node = tree
  for key in path:
    node = node[getattr(key, "key", key)]
  return node


def _graft(collection: str, fresh: PyTree, loaded: PyTree, source: str,
           backbone_only: bool) -> PyTree:
  """`fresh` with each leaf replaced by its namesake in `loaded`, placed like `fresh`."""

  def pick(path, leaf):
    if backbone_only and is_classifier(path):
      return leaf
    name = f"{collection}/{_name(path)}"
    try:
      value = _lookup(loaded, path)
    except (KeyError, TypeError, IndexError):
      raise CheckpointError(
          f"{name} is not in the checkpoint of {source}: the models differ.") from None
    if value.shape != leaf.shape:
      hint = (" (a different num_classes needs init_from.backbone_only=True)"
              if is_classifier(path) else "")
      raise CheckpointError(
          f"{name} has shape {tuple(value.shape)} in the checkpoint of {source} but "
          f"{tuple(leaf.shape)} in this model{hint}.")
    return jax.device_put(value.astype(leaf.dtype), leaf.sharding)

  return jax.tree_util.tree_map_with_path(pick, fresh)


def init_from(config, state):
  """`state` with its weights loaded from `config.init_from.workdir`, if set.

  Loads params and batch_stats (the raw weights, or with `config.init_from.ema` their
  moving average) from step `config.init_from.step` (-1 = latest). The EMA copies
  become the loaded weights, and a non-empty stale buffer is refilled with them;
  optimizer state, step and RNG are left as they are. Raises CheckpointError naming
  the parameter whose shape differs (the classifier is exempt with `backbone_only`),
  ConfigError for `init_from.ema` on a run that kept no moving average.
  """
  source = config.init_from.get("workdir")
  if not source:
    return state
  step = config.init_from.get("step", -1)
  # Read where the state's arrays live (replicated over the run's mesh).
  sharding = jax.tree.leaves(state.params)[0].sharding
  weights, _, source_config = readers.restore_weights(
      source, sharding, None if step is None or step < 0 else step)
  use_ema = bool(config.init_from.get("ema", False))
  if use_ema:
    readers.check_kept_ema(source_config, source,
                           "drop init_from.ema to start from its weights")
  prefix = "ema_" if use_ema else ""
  backbone_only = bool(config.init_from.get("backbone_only", False))
  params = _graft("params", state.params, weights[prefix + "params"], source,
                  backbone_only)
  batch_stats = _graft("batch_stats", state.batch_stats,
                       weights[prefix + "batch_stats"], source, backbone_only)
  stale = state.stale_params
  if jax.tree.leaves(stale):
    # Every slot of the ring buffer holds the loaded weights, as at step 0.
    stale = jax.tree.map(
        lambda p, s: jax.device_put(jnp.broadcast_to(p, s.shape), s.sharding),
        params, stale)
  # The EMA starts as copies: the train step donates the state, and a buffer that
  # sat in two leaves would be donated twice ("Attempt to donate the same buffer
  # twice").
  return state.replace(params=params, batch_stats=batch_stats,
                       ema_params=jax.tree.map(jnp.copy, params),
                       ema_batch_stats=jax.tree.map(jnp.copy, batch_stats),
                       stale_params=stale)


def trainable_mask(config, params: PyTree) -> PyTree:
  """True for parameters the optimizer updates: all, or only the classifier's when
  `config.init_from.freeze_backbone`."""
  frozen = bool(config.init_from.get("freeze_backbone", False))
  return jax.tree_util.tree_map_with_path(
      lambda path, _: is_classifier(path) or not frozen, params)


def trainable_param_count(config, params: PyTree) -> int:
  """How many parameters the optimizer updates (see `trainable_mask`)."""
  mask = trainable_mask(config, params)
  return sum(int(p.size) for p, trainable in zip(jax.tree.leaves(params),
                                                 jax.tree.leaves(mask)) if trainable)


def freeze(optimizer: optax.GradientTransformation,
           mask: PyTree) -> optax.GradientTransformation:
  """`optimizer` on the parameters where `mask` is True, zero updates elsewhere.

  Frozen parameters get no optimizer state (and no weight decay).
  """
  labels = jax.tree.map(lambda trainable: "train" if trainable else "frozen", mask)
  return optax.multi_transform(
      {"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def keep_frozen_batch_stats(config, old_batch_stats: PyTree,
                            new_batch_stats: PyTree) -> PyTree:
  """The BatchNorm statistics after a train step: `new_batch_stats`, except that the
  backbone keeps `old_batch_stats` when `config.init_from.freeze_backbone`.

  Pure and jit-friendly (`config` is read at trace time).
  """
  if not config.init_from.get("freeze_backbone", False):
    return new_batch_stats
  return jax.tree_util.tree_map_with_path(
      lambda path, old, new: new if is_classifier(path) else old,
      old_batch_stats, new_batch_stats)
