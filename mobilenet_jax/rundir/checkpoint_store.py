"""The one module that talks to Orbax: how a checkpoint step is laid out and read.

Each step WORKDIR/checkpoints/<step>/ holds two items:

  state/  the whole train state (params, batch_stats, opt_state, EMA, stale buffer,
          step, rng), as Orbax's sharded array format (OCDBT + zarr).
  meta/   JSON: the format version, the step, the config the run was trained with,
          and the input pipeline position.

Orbax writes each step into a temporary directory and renames it on commit, so a
checkpoint interrupted by a crash (even SIGKILL) is never listed as a step. Restoring
goes against an abstract state *with shardings*, so a checkpoint written on 8 devices
restores on 1 and vice versa.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.rundir import layout, orbax_quiet

PyTree = Any
FORMAT_VERSION = 1
STATE, META = "state", "meta"
# The fields of a stored state that tools read (evaluate, export, init_from, load):
# every state a run directory holds has them (train/state.py, interop's import).
WEIGHT_FIELDS = ("params", "batch_stats", "ema_params", "ema_batch_stats")

# The metric that ranks checkpoints for keep_best_checkpoint, and accepted aliases
# (the first present wins); higher is better.
BEST_METRIC = "eval_top1"
_BEST_METRIC_ALIASES = (BEST_METRIC, "eval/top1", "top1", "eval/top_1", "top_1",
                        "eval_accuracy", "eval/accuracy", "accuracy")


class CorruptCheckpointError(CheckpointError):
  """A checkpoint's files cannot be read, or it holds non-finite weights."""


def abstract_state(state: PyTree) -> PyTree:
  """`state` as ShapeDtypeStructs that keep each array's sharding."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def best_metric(metrics) -> float:
  """The value that ranks a checkpoint for keep_best_checkpoint (-inf: none)."""
  for key in _BEST_METRIC_ALIASES:
    if key in metrics:
      return float(metrics[key])
  # Metrics without top-1 never win; LatestN still keeps the checkpoint a while.
  return -math.inf


def _options(config, read_only: bool) -> ocp.CheckpointManagerOptions:
  if read_only:
    return ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0,
        enable_async_checkpointing=False)
  policies = [ocp.checkpoint_managers.LatestN(n=max(1, config.keep_checkpoints))]
  best_fn = None
  if config.get("keep_best_checkpoint", False):
    best_fn = best_metric
    # Orbax's BestN alone keeps only the best N; together with LatestN under
    # AnyPreservationPolicy a checkpoint survives if it is among the latest K *or*
    # the best one. Checkpoints without metrics are left to LatestN.
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best_metric, n=1, keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManagerOptions(
      enable_async_checkpointing=True,
      # best_fn makes Orbax write the metrics next to each step and rank by them.
      best_fn=best_fn, best_mode="max",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      # Temporary directories left by a killed save are removed on open (safe: the
      # run lock keeps a second writer out).
      cleanup_tmp_directories=True)


def _array_handler() -> ocp.type_handlers.ArrayHandler:
  """Orbax's jax.Array handler, replica-parallel only across processes.

  Replica-parallel saving (Orbax's default off GPU) splits each replicated array into
  one slice per device, each a separate dispatch compiled per shape on the first save:
  on one host with 8 devices that blocked the loop for tens of seconds, and the slices
  all land in the same host memory anyway. Across processes each host still writes
  its share.
  """
  store = None
  try:  # Keep Orbax's per-array metadata, as its default handler writes it.
    from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
    store = array_metadata_store.Store()
  except ImportError:
    pass
  multi_process = jax.process_count() > 1
  return ocp.type_handlers.ArrayHandler(
      use_replica_parallel=multi_process,
      # Tiny slices cost more to dispatch than they save in writing.
      min_slice_bytes_for_replica_parallel=1 << 20 if multi_process else None,
      array_metadata_store=store)


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  registry = ocp.type_handlers.create_type_handler_registry(
      *[(ty, ocp.type_handlers.get_type_handler(ty))
        for ty in ocp.type_handlers.supported_types() if ty is not jax.Array],
      (jax.Array, _array_handler()))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def manager(workdir, config=None, read_only: bool = False) -> ocp.CheckpointManager:
  """Orbax's manager of WORKDIR/checkpoints (`config` chooses what a writer keeps)."""
  with orbax_quiet.read_only_warning_dropped(read_only):
    return ocp.CheckpointManager(
        layout.checkpoint_dir(workdir), options=_options(config, read_only),
        item_handlers={STATE: _state_handler(), META: ocp.JsonCheckpointHandler()})


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
  """The directory of `step`."""
  return str(mngr.directory / str(step))


def resolve_step(mngr: ocp.CheckpointManager, step: int | None) -> int:
  """`step`, or the latest; CheckpointError if there is none or it is missing."""
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(f"No checkpoint in {mngr.directory}.")
  if step is None or step < 0:
    return max(steps)
  if step not in steps:
    raise CheckpointError(
        f"No checkpoint for step {step} in {mngr.directory}; available steps: "
        f"{', '.join(map(str, sorted(steps)))}.")
  return step


def meta_record(config, step: int) -> dict:
  """What meta/ holds for a step saved now."""
  return {
      "format_version": FORMAT_VERSION,
      "step": step,
      "config": config.to_json_best_effort(),
      # The input pipeline is a function of (config.seed, step): no state to save.
      "input_pipeline": {"position": "state.step", "seed": config.get("seed")},
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "jax_version": jax.__version__,
  }


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  """meta/ of `step`; CorruptCheckpointError if unreadable, CheckpointError if of
  another format version."""
  # JsonCheckpointHandler keeps the item in a file named "metadata".
  path = f"{step_path(mngr, step)}/{META}/metadata"
  try:
    meta = mngr.restore(step, args=ocp.args.Composite(
        **{META: ocp.args.JsonRestore()}))[META]
  except Exception as error:  # pylint: disable=broad-except
    raise CorruptCheckpointError(
        f"Checkpoint metadata {path} is unreadable (corrupt or truncated?): "
        f"{orbax_quiet.reason(error)}") from error
  if not isinstance(meta, dict) or "format_version" not in meta:
    raise CorruptCheckpointError(f"Checkpoint metadata {path} has no format version; "
                                 "it was not written by mobilenet_jax.")
  if meta["format_version"] != FORMAT_VERSION:
    raise CheckpointError(
        f"Checkpoint {path} has format version {meta['format_version']}, this code "
        f"reads version {FORMAT_VERSION}.")
  return meta


def stored_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  """The config `step` was written with, as a dict."""
  return json.loads(read_meta(mngr, step)["config"])


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


def _shapes(tree: PyTree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def stored_metadata(mngr: ocp.CheckpointManager, step: int) -> PyTree:
  """The stored state's tree of ArrayMetadata (shape, dtype, ...)."""
  path = f"{step_path(mngr, step)}/{STATE}"
  try:
    metadata = mngr.item_metadata(step)[STATE]
  except Exception as error:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f"Checkpoint {path} has unreadable metadata (corrupt "
                                 f"or truncated?): {orbax_quiet.reason(error)}") from error
  if metadata is None:
    raise CorruptCheckpointError(f"Checkpoint {path} has no readable metadata (its "
                                 "_METADATA file is missing or corrupt).")
  return metadata


def check_structure(mngr: ocp.CheckpointManager, step: int, target: PyTree) -> None:
  """CheckpointError naming the arrays whose presence or shape differ."""
  stored, wanted = _shapes(stored_metadata(mngr, step)), _shapes(target)
  problems = [f"{name} missing from the checkpoint" for name in wanted
              if name not in stored]
  problems += [f"{name} in the checkpoint but not in this state" for name in stored
               if name not in wanted]
  problems += [f"{name}: shape {stored[name]} (checkpoint) vs {wanted[name]} (now)"
               for name in wanted if name in stored and stored[name] != wanted[name]]
  if problems:
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    raise CheckpointError(
        f"Checkpoint {step_path(mngr, step)} does not hold the state this run "
        f"builds: {'; '.join(problems[:5])}{more}.")


def restore_state(mngr: ocp.CheckpointManager, step: int, target: PyTree,
                  partial: bool = False) -> PyTree:
  """Restores the `state` item of `step` into the abstract `target` (`partial`: only
  the subtrees `target` names); CorruptCheckpointError if it cannot be read or holds
  non-finite weights."""
  restored, why = orbax_quiet.call_quietly_on_failure(
      lambda: mngr.restore(step, args=ocp.args.Composite(**{
          STATE: ocp.args.PyTreeRestore(
              item=target,
              restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=partial)})))
  if why is not None:
    raise CorruptCheckpointError(
        f"Checkpoint {step_path(mngr, step)}/{STATE} could not be restored (corrupt, "
        f"truncated, or not the state this config builds): {why}")
  state = restored[STATE]
  bad = non_finite_report(state)
  if bad:
    raise CorruptCheckpointError(
        f"Checkpoint {step_path(mngr, step)} holds non-finite weights ({bad}).")
  return state


def _weights_of(state: PyTree) -> dict:
  get = state.get if isinstance(state, dict) else lambda k: getattr(state, k, None)
  return {k: get(k) for k in WEIGHT_FIELDS if get(k) is not None}


@jax.jit
def _finite_flags(tree):
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def non_finite_report(state: PyTree) -> str:
  """'' if every weight and statistic of `state` is finite, else which are not,
  e.g. "params: 15 of 83 arrays; batch_stats: 27 of 54 arrays". One compiled
  reduction where the arrays are, one small fetch."""
  weights = {name: [x for x in jax.tree.leaves(tree)
                    if jnp.issubdtype(x.dtype, jnp.inexact)]
             for name, tree in _weights_of(state).items()}
  flags = jax.device_get(_finite_flags(weights))
  parts = [f"{name}: {sum(not ok for ok in oks)} of {len(oks)} arrays"
           for name, oks in flags.items() if not all(oks)]
  return "; ".join(parts)
