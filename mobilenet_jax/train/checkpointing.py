"""Checkpoints: the one module that talks to Orbax.

A run's checkpoints live in WORKDIR/checkpoints/<step>/, each with two items:

  state/  the whole TrainState (params, batch_stats, opt_state, EMA, stale buffer,
          step, rng), as Orbax's sharded array format (OCDBT + zarr).
  meta/   JSON: the format version, the step, the config the run was trained with,
          and the input pipeline position.

Orbax writes each step into a temporary directory and renames it on commit, so a
checkpoint interrupted by a crash (even SIGKILL) is never listed as a step; leftover
temporary directories are deleted when the next `Checkpointer` opens the directory.

The input pipeline needs no state of its own: batches are a deterministic function of
(config.seed, step), so `state.step` is the pipeline position.

Restoring goes against the abstract version of the caller's state *with its
shardings*, so a checkpoint written on 8 devices restores on 1 and vice versa.

A corrupt latest checkpoint (unreadable files: a truncated array, garbled or missing
metadata; e.g. a disk that filled up, or files damaged after the commit) does not stop
a resuming run: `restore_or_initial` restores the newest readable step instead, says
which and why, and moves each corrupt step, untouched, to
`checkpoints/corrupt-<step>/`. Moving it aside matters: the resumed run trains those
steps again and saves the same step numbers, and left in place the corrupt step would
block that save and later be garbage-collected (deleted) by `keep_checkpoints`.
Orbax ignores directories whose names are not step numbers, so the moved copy stays
until the user deletes it. A checkpoint written with another config is not corrupt:
that still stops the run with the differences listed.

What else a run directory holds (results, which configs may resume a checkpoint,
weights-only restore for tools) is mobilenet_jax/run_dir.py's business.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp

from mobilenet_jax import console
from mobilenet_jax.errors import CheckpointError

PyTree = Any
CORRUPT_PREFIX = "corrupt-"  # checkpoints/corrupt-<step>/: set aside, never deleted.


class CorruptCheckpointError(CheckpointError):
  """A checkpoint's files cannot be read (truncated, garbled or missing)."""

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_STATE, _META = "state", "meta"

# The metric that ranks checkpoints for keep_best_checkpoint, and accepted aliases
# (the first present wins); higher is better.
BEST_METRIC = "eval_top1"
_BEST_METRIC_ALIASES = (BEST_METRIC, "eval/top1", "top1", "eval/top_1", "top_1",
                        "eval_accuracy", "eval/accuracy", "accuracy")

def checkpoint_dir(workdir: str) -> str:
  """Where a run's checkpoints live."""
  return f"{str(workdir).rstrip('/')}/{CHECKPOINT_DIR}"


def abstract_state(state: PyTree) -> PyTree:
  """`state` as ShapeDtypeStructs that keep each array's sharding."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _best_metric(metrics) -> float:
  for key in _BEST_METRIC_ALIASES:
    if key in metrics:
      return float(metrics[key])
  # Metrics without top-1 never win; LatestN still keeps the checkpoint a while.
  return -math.inf


def _json_metrics(metrics: dict) -> dict:
  """Metrics as JSON scalars (jax/numpy arrays are not JSON serializable)."""
  out = {}
  for key, value in metrics.items():
    try:
      out[str(key)] = float(value)
    except (TypeError, ValueError):
      out[str(key)] = str(value)
  return out


def _reason(error: BaseException) -> str:
  """The innermost cause's first line: usually names the file or array that failed."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().splitlines()
  line = text[0] if text else ""
  return f"{type(error).__name__}: {line[:400]}"


def _options(config, read_only: bool) -> ocp.CheckpointManagerOptions:
  if read_only:
    return ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0,
        enable_async_checkpointing=False)
  policies = [ocp.checkpoint_managers.LatestN(n=max(1, config.keep_checkpoints))]
  best_fn = None
  if config.get("keep_best_checkpoint", False):
    best_fn = _best_metric
    # Orbax's BestN alone keeps only the best N; together with LatestN under
    # AnyPreservationPolicy a checkpoint survives if it is among the latest K *or*
    # the best one. Checkpoints without metrics are left to LatestN.
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManagerOptions(
      enable_async_checkpointing=True,
      # best_fn makes Orbax write the metrics next to each step and rank by them.
      best_fn=best_fn,
      best_mode="max",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      # Temporary directories left by a killed save are removed on open.
      cleanup_tmp_directories=True,
  )


def _array_handler() -> ocp.type_handlers.ArrayHandler:
  """Orbax's jax.Array handler, replica-parallel only across processes.

  Replica-parallel saving (Orbax's default off GPU) splits each replicated array
  into one slice per device and has each device write its slice: every slice is a
  separate `lax.slice` dispatch, compiled per shape on the first save. On one host
  with 8 devices that is ~3,500 slices (185 compilations) for a MobileNet state, and
  save() blocked the training loop 20-27 s (1.5 s on later saves) against 0.2 s on
  one device; the slices all land in the same host memory and file system anyway.
  Across processes each host still writes its share.
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


class _ReadOnlyByChoice(logging.Filter):
  """Drops Orbax's "Given directory is read only" warning: we asked for read-only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


def _manager(workdir: str, config=None, read_only: bool = False
             ) -> ocp.CheckpointManager:
  quiet = _ReadOnlyByChoice()
  absl_logger = logging.getLogger("absl")  # Orbax logs through absl.
  if read_only:  # Also for library users (load(), evaluate()), who set up no console.
    absl_logger.addFilter(quiet)
  try:
    return ocp.CheckpointManager(
        checkpoint_dir(workdir),
        options=_options(config, read_only),
        item_handlers={_STATE: _state_handler(),
                       _META: ocp.JsonCheckpointHandler()})
  finally:
    absl_logger.removeFilter(quiet)


def _step_path(manager: ocp.CheckpointManager, step: int) -> str:
  return str(manager.directory / str(step))


def _resolve_step(manager: ocp.CheckpointManager, step: int | None) -> int:
  """`step`, or the latest; CheckpointError if there is none or it is missing."""
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"No checkpoint in {manager.directory}.")
  if step is None or step < 0:
    return max(steps)
  if step not in steps:
    raise CheckpointError(
        f"No checkpoint for step {step} in {manager.directory}; available steps: "
        f"{', '.join(map(str, sorted(steps)))}.")
  return step


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  # JsonCheckpointHandler keeps the item in a file named "metadata".
  path = f"{_step_path(manager, step)}/{_META}/metadata"
  try:
    meta = manager.restore(step, args=ocp.args.Composite(
        **{_META: ocp.args.JsonRestore()}))[_META]
  except Exception as error:  # pylint: disable=broad-except
    raise CorruptCheckpointError(
        f"Checkpoint metadata {path} is unreadable (corrupt or truncated?): "
        f"{_reason(error)}") from error
  if not isinstance(meta, dict) or "format_version" not in meta:
    raise CorruptCheckpointError(f"Checkpoint metadata {path} has no format version; "
                                 "it was not written by mobilenet_jax.")
  if meta["format_version"] != FORMAT_VERSION:
    raise CheckpointError(
        f"Checkpoint {path} has format version {meta['format_version']}, this code "
        f"reads version {FORMAT_VERSION}.")
  return meta


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


def _shapes(tree: PyTree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def _stored_metadata(manager: ocp.CheckpointManager, step: int) -> PyTree:
  """The stored state's tree of ArrayMetadata (shape, dtype, ...)."""
  path = f"{_step_path(manager, step)}/{_STATE}"
  try:
    metadata = manager.item_metadata(step)[_STATE]
  except Exception as error:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f"Checkpoint {path} has unreadable metadata (corrupt "
                                 f"or truncated?): {_reason(error)}") from error
  if metadata is None:
    raise CorruptCheckpointError(f"Checkpoint {path} has no readable metadata (its "
                                 "_METADATA file is missing or corrupt).")
  return metadata


def _check_structure(manager: ocp.CheckpointManager, step: int, target: PyTree):
  """CheckpointError naming the arrays whose presence or shape differ."""
  stored, wanted = _shapes(_stored_metadata(manager, step)), _shapes(target)
  problems = [f"{name} missing from the checkpoint" for name in wanted
              if name not in stored]
  problems += [f"{name} in the checkpoint but not in this state" for name in stored
               if name not in wanted]
  problems += [f"{name}: shape {stored[name]} (checkpoint) vs {wanted[name]} (now)"
               for name in wanted if name in stored and stored[name] != wanted[name]]
  if problems:
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    raise CheckpointError(
        f"Checkpoint {_step_path(manager, step)} does not hold the state this run "
        f"builds: {'; '.join(problems[:5])}{more}.")


# Fragments of the tracebacks that TensorStore's threads print, interleaved, when the
# reads Orbax abandoned after one failed array finish and find its event loop closed.
_ABANDONED_READ_NOISE = ("Event loop is closed", "Traceback (most recent call last)",
                         "base_events.py", "_check_closed()")
_ABANDONED_READ_DRAIN_S = 0.5  # Local reads still in flight finish well within this.


def _is_abandoned_read_noise(line: str) -> bool:
  """A line of those tracebacks, or a fragment left between their interleaved lines."""
  return (any(fragment in line for fragment in _ABANDONED_READ_NOISE)
          or line.strip() in ("", ":", "RuntimeError", "RuntimeError:"))


def _restore_state(manager: ocp.CheckpointManager, step: int, target: PyTree,
                   partial: bool = False) -> PyTree:
  """Restores the `state` item of `step` into the abstract `target`."""
  reason = None
  with console.stderr_captured() as captured:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**{
          _STATE: ocp.args.PyTreeRestore(
              item=target,
              restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=partial)}))
    except Exception as error:  # pylint: disable=broad-except
      reason = _reason(error)
      time.sleep(_ABANDONED_READ_DRAIN_S)
  if reason is None:
    captured.replay()
    return restored[_STATE]
  captured.replay(drop=_is_abandoned_read_noise)
  # Outside the except block, so that the failed restore's frames are released.
  _collect_abandoned_reads()
  raise CorruptCheckpointError(
      f"Checkpoint {_step_path(manager, step)}/{_STATE} could not be restored "
      f"(corrupt, truncated, or not the state this config builds): {reason}")


def _collect_abandoned_reads() -> None:
  """Quiets the reads Orbax abandons when one array of a restore fails.

  Its other array reads are left as unfinished coroutines and futures; garbage-collected
  later (at the latest at exit), each would print an "Exception ignored in: <coroutine
  ...>" traceback or log "Task exception was never retrieved" after our one-line
  error. From the first failed restore on, such errors from Orbax go to the debug log;
  any other still prints.
  """
  if getattr(sys.unraisablehook, "_quiets_orbax", False):
    gc.collect()
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if "orbax" in getattr(getattr(unraisable.object, "cr_code", None), "co_filename", ""):
      logging.debug("Abandoned checkpoint read: %s", unraisable.exc_value)
    else:
      previous(unraisable)

  hook._quiets_orbax = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_AbandonedOrbaxFutures())
  gc.collect()


class _AbandonedOrbaxFutures(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" records of Orbax reads."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage().lower()
    return not ("exception was never retrieved" in message
                and ("orbax" in message or "ocdbt" in message))


class Checkpointer:
  """Saves and restores a run's TrainState in WORKDIR/checkpoints, asynchronously.

  Keeps the latest `config.keep_checkpoints` steps plus, with
  `config.keep_best_checkpoint`, the one with the best eval top-1 among those saved
  with metrics (pass `metrics={"eval_top1": ...}` to `save`). Every process of a
  multi-host run must make the same calls.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self._workdir = workdir
    self._config = config
    self._every = int(config.checkpoint_every_steps)
    self._manager = _manager(workdir, config)

  @property
  def directory(self) -> str:
    return str(self._manager.directory)

  def all_steps(self) -> list[int]:
    """The steps with a complete checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best top-1 among those saved with metrics, or None."""
    return self._manager.best_step() if self._config.get(
        "keep_best_checkpoint", False) else None

  def restore_or_initial(self, initial_state: PyTree, step: int | None = None, *,
                         check_config: Callable[[dict, str], None] | None = None
                         ) -> PyTree:
    """The latest readable checkpoint (or `step`), or `initial_state` if there is none.

    Restores onto the shardings of `initial_state`'s arrays. Without `step`, corrupt
    newer checkpoints are moved aside (see the module doc) and the newest readable
    one is restored. Raises CheckpointError if `step` is missing or corrupt, if no
    checkpoint is readable, if one is of another format version, or if it holds other
    arrays than `initial_state`. `check_config(stored_config, path)` may raise before
    anything is restored (the trainer passes `run_dir.check_compatible`: a config
    that builds a different state).
    """
    if step is not None:
      return self._restore_step(_resolve_step(self._manager, step), initial_state,
                                check_config)
    corrupt = []
    for candidate in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self._restore_step(candidate, initial_state, check_config)
      except CorruptCheckpointError as error:
        corrupt.append((candidate, error))
        continue
      self._set_aside(corrupt, candidate)
      return state
    if corrupt:
      raise CheckpointError(
          f"No readable checkpoint in {self.directory}: "
          + " ".join(str(error) for _, error in corrupt)
          + " Move the checkpoints aside (or use a new --workdir) to start afresh.")
    return initial_state

  def _restore_step(self, step: int, initial_state: PyTree,
                    check_config: Callable[[dict, str], None] | None) -> PyTree:
    meta = _read_meta(self._manager, step)
    if check_config is not None:
      check_config(json.loads(meta["config"]), _step_path(self._manager, step))
    target = abstract_state(initial_state)
    _check_structure(self._manager, step, target)
    return _restore_state(self._manager, step, target)

  def _set_aside(self, corrupt: list, restored_step: int) -> None:
    """Moves each corrupt step to checkpoints/corrupt-<step>/ (process 0 only)."""
    if not corrupt:
      return
    targets = [_free_path(os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}"))
               for step, _ in corrupt]
    _sync("mobilenet_jax:corrupt_checkpoints_found")
    for (step, error), target in zip(corrupt, targets):
      if jax.process_index() == 0:
        os.rename(_step_path(self._manager, step), target)
      logging.warning(
          "Checkpoint step %d is unreadable, so this run resumes from step %d, the "
          "newest readable checkpoint, and trains the steps after it again. The "
          "corrupt step is kept, untouched, in %s. Why: %s", step, restored_step,
          target, error)
    _sync("mobilenet_jax:corrupt_checkpoints_moved")
    self._manager.reload()

  def save(self, state: PyTree, *, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts saving `state` at its step if that is a save step or `force`.

    Returns whether a save started; it completes in the background (see `wait`).
    A step that already has a checkpoint is never overwritten. `metrics` (e.g.
    {"eval_top1": 0.7, ...}) are stored with the step and rank it for the best.
    """
    step = int(state.step)
    if not force and not (self._every > 0 and step % self._every == 0):
      return False
    if step in self._manager.all_steps():
      logging.info("Checkpoint for step %d exists; not overwriting it.", step)
      return False
    meta = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "config": self._config.to_json_best_effort(),
        # The input pipeline is a function of (config.seed, step): no state to save.
        "input_pipeline": {"position": "state.step", "seed": self._config.get("seed")},
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
    }
    # force=True: the decision above is ours; Orbax's own policy would also save
    # the first step it sees.
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeSave(state),
                                   _META: ocp.args.JsonSave(meta)}),
        metrics=_json_metrics(metrics) if metrics else None,
        force=True)

  def wait(self) -> None:
    """Blocks until every started save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  @contextlib.contextmanager
  def closed_on_error(self):
    """Closes this checkpointer if the block raises, so that Orbax's background
    threads end before the process exits with the error."""
    try:
      yield self
    except BaseException:
      self.close()
      raise

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _sync(name: str) -> None:
  """All processes meet here (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _free_path(path: str) -> str:
  """`path`, or `path-2`, `path-3`... if taken (a step may go bad twice)."""
  candidate, n = path, 1
  while os.path.exists(candidate):
    n += 1
    candidate = f"{path}-{n}"
  return candidate


def check_resumable(workdir: str, check_config: Callable[[dict, str], None]) -> None:
  """Runs `check_config(stored_config, path)` on the newest readable checkpoint in
  `workdir`, if any (cheap: reads only its metadata).

  Lets a resume with the wrong config fail before the data and the model are
  built; `Checkpointer.restore_or_initial` checks the same again.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return
  manager = _manager(workdir, read_only=True)
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        meta = _read_meta(manager, step)
      except CorruptCheckpointError:
        continue  # The restore falls back past it (see the module doc).
      check_config(json.loads(meta["config"]), _step_path(manager, step))
      return
  finally:
    manager.close()


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The config the run in `workdir` was trained with (stored in its checkpoint)."""
  manager = _manager(workdir, read_only=True)
  try:
    step = _resolve_step(manager, step)
    return ml_collections.ConfigDict(json.loads(_read_meta(manager, step)["config"]))
  finally:
    manager.close()


def restore_subtrees(workdir: str, keys: tuple[str, ...], sharding: jax.sharding.Sharding,
                     step: int | None = None) -> tuple[dict, int, dict]:
  """Only the `keys` subtrees of a stored TrainState, from the checkpoint alone.

  Returns ({key: subtree}, step, stored config as a dict). The rest of the state is
  not read (Orbax partial restore against the stored array metadata), so this works
  whatever optimizer the run used. Arrays are placed with `sharding`.
  """
  manager = _manager(workdir, read_only=True)
  try:
    step = _resolve_step(manager, step)
    config = json.loads(_read_meta(manager, step)["config"])
    metadata = _stored_metadata(manager, step)
    stored = {key: metadata[key] for key in keys}
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), stored)
    subtrees = _restore_state(manager, step, target, partial=True)
  finally:
    manager.close()
  return subtrees, step, config
