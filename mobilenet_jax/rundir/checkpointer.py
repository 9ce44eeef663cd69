"""The writer's side of checkpoints: save asynchronously, resume from the newest good step.

A corrupt latest checkpoint (unreadable files: a truncated array, garbled or missing
metadata; a disk that filled up; files damaged after the commit) or one holding
non-finite weights does not stop a resuming run: `restore_or_initial` restores the
newest good step instead, says which and why, and moves each bad step, untouched, to
`checkpoints/corrupt-<step>/`. Moving it aside matters: the resumed run trains those
steps again and saves the same step numbers, and left in place the bad step would
block that save and later be deleted by `keep_checkpoints`. A checkpoint written with
another config is not corrupt: that still stops the run with the differences listed.

A state with a non-finite weight or statistic is never saved (`save` raises), so a
diverged run cannot poison its own resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from mobilenet_jax.errors import CheckpointError, TrainingDivergedError
from mobilenet_jax.rundir import checkpoint_store as store
from mobilenet_jax.rundir import layout, orbax_quiet
from mobilenet_jax.rundir.lock import RunLock

PyTree = Any


def _json_metrics(metrics: dict) -> dict:
  """Metrics as JSON scalars (jax/numpy arrays are not JSON serializable)."""
  out = {}
  for key, value in metrics.items():
    try:
      out[str(key)] = float(value)
    except (TypeError, ValueError):
      out[str(key)] = str(value)
  return out


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # How TensorStore reports errno.


def _os_reason(error: BaseException) -> str | None:
  """The operating system's reason a write failed ("No space left on device"), if
  the chain of `error` carries one."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return os.strerror(error.errno)
    match = _OS_ERROR_CODE.search(str(error))
    if match:
      return os.strerror(int(match.group(1)))
    error = error.__cause__ or error.__context__
  return None


def _write_error(directory: str, step: int | None, error: BaseException,
                 last_good: int | None) -> CheckpointError:
  """One line for a save that failed: the OS's reason, and what survives."""
  reason = _os_reason(error) or orbax_quiet.reason(error)
  which = f"step {step}" if step is not None else "a checkpoint"
  kept = (f"the committed checkpoints up to step {last_good} are intact"
          if last_good is not None else "no checkpoint was committed")
  # The failed write's other coroutines would report themselves at exit.
  orbax_quiet.collect_abandoned_reads()
  return CheckpointError(f"could not write {which} in {directory}: {reason}; {kept}. "
                         "Free space or fix the directory, then run the same command "
                         "to resume.")


class Checkpointer:
  """Saves and restores a run's train state in WORKDIR/checkpoints, asynchronously.

  Keeps the latest `config.keep_checkpoints` steps plus, with
  `config.keep_best_checkpoint`, the one with the best eval top-1 among those saved
  with metrics (pass `metrics={"eval_top1": ...}` to `save`). Every process of a
  multi-host run must make the same calls. Hold the run lock (lock.py) while one is
  open: opening deletes temporary directories of unfinished saves.
  """

  def __init__(self, workdir, config: ml_collections.ConfigDict):
    self._workdir = str(workdir)
    self._config = config
    self._every = int(config.checkpoint_every_steps)
    self._manager = store.manager(workdir, config)
    self._pending_step: int | None = None

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
    """The latest good checkpoint (or `step`), or `initial_state` if there is none.

    Restores onto the shardings of `initial_state`'s arrays. Without `step`, bad
    newer checkpoints are moved aside (module doc). Raises CheckpointError if `step`
    is missing or bad, if no checkpoint is good, if one is of another format version,
    or if it holds other arrays than `initial_state`. `check_config(stored_config,
    path)` may raise before anything is restored (identity.check_compatible).
    """
    if step is not None:
      return self._restore_step(store.resolve_step(self._manager, step), initial_state,
                                check_config)
    bad = []
    for candidate in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self._restore_step(candidate, initial_state, check_config)
      except store.CorruptCheckpointError as error:
        bad.append((candidate, error))
        continue
      self._set_aside(bad, candidate)
      return state
    if bad:
      raise CheckpointError(
          f"No usable checkpoint in {self.directory}: "
          + " ".join(str(error) for _, error in bad)
          + " Move the checkpoints aside (or use a new --workdir) to start afresh.")
    return initial_state

  def _restore_step(self, step: int, initial_state: PyTree,
                    check_config: Callable[[dict, str], None] | None) -> PyTree:
    meta = store.read_meta(self._manager, step)
    if check_config is not None:
      check_config(json.loads(meta["config"]), store.step_path(self._manager, step))
    target = store.abstract_state(initial_state)
    store.check_structure(self._manager, step, target)
    return store.restore_state(self._manager, step, target)

  def _set_aside(self, bad: list, restored_step: int) -> None:
    """Moves each bad step to checkpoints/corrupt-<step>/ (process 0 only)."""
    if not bad:
      return
    targets = [_free_path(layout.corrupt_step_path(self._workdir, step))
               for step, _ in bad]
    _sync("mobilenet_jax:corrupt_checkpoints_found")
    for (step, error), target in zip(bad, targets):
      if jax.process_index() == 0:
        os.rename(store.step_path(self._manager, step), target)
      logging.warning(
          "Checkpoint step %d is unusable, so this run resumes from step %d, the "
          "newest good checkpoint, and trains the steps after it again. The bad step "
          "is kept, untouched, in %s. Why: %s", step, restored_step, target, error)
    _sync("mobilenet_jax:corrupt_checkpoints_moved")
    self._manager.reload()

  def save(self, state: PyTree, *, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts saving `state` at its step if that is a save step or `force`.

    Returns whether a save started; it completes in the background (see `wait`).
    A step that already has a checkpoint is never overwritten. `metrics` (e.g.
    {"eval_top1": 0.7, ...}) are stored with the step and rank it for the best.
    Raises TrainingDivergedError, and saves nothing, if a weight or BatchNorm
    statistic of `state` is NaN or infinite; CheckpointError if writing fails.
    """
    step = int(state.step)
    if not force and not (self._every > 0 and step % self._every == 0):
      return False
    if step in self._manager.all_steps():
      logging.info("Checkpoint for step %d exists; not overwriting it.", step)
      return False
    bad = store.non_finite_report(state)
    if bad:
      last = self.latest_step()
      kept = f"last checkpoint: step {last}" if last is not None else "no checkpoint yet"
      raise TrainingDivergedError(
          f"the weights became NaN or infinite by step {step} ({bad}); that state "
          f"was not saved ({kept}). Lower the learning rate (lr.base), enable gradient "
          "clipping (optimizer.grad_clip_norm) or check the input data.")
    self.wait()  # A previous save's failure surfaces here, before another starts.
    self._pending_step = step
    args = ocp.args.Composite(**{
        store.STATE: ocp.args.PyTreeSave(state),
        store.META: ocp.args.JsonSave(store.meta_record(self._config, step))})
    try:
      # force=True: the decision above is ours; Orbax's own policy would also save
      # the first step it sees.
      return self._manager.save(step, args=args, force=True,
                                metrics=_json_metrics(metrics) if metrics else None)
    except Exception as error:  # pylint: disable=broad-except
      raise _write_error(self.directory, step, error, self.latest_step()) from None

  def wait(self) -> None:
    """Blocks until every started save is committed; CheckpointError if one failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-except
      step, self._pending_step = self._pending_step, None
      raise _write_error(self.directory, step, error, self.latest_step()) from None
    self._pending_step = None

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's resources."""
    try:
      self.wait()
    finally:
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


@flax.struct.dataclass
class WeightsOnlyState:
  """A run that starts from given weights (an import): the weights, which are also
  their own moving average, at step 0. Its fields are `store.WEIGHT_FIELDS`."""
  step: jax.Array
  params: Any
  batch_stats: Any
  ema_params: Any
  ema_batch_stats: Any


def write_weights_only(workdir, config: ml_collections.ConfigDict, params: PyTree,
                       batch_stats: PyTree) -> None:
  """Writes `params` and `batch_stats` with `config` as the step-0 checkpoint of a new
  run in `workdir`; CheckpointError if `workdir` already holds one."""
  with RunLock(workdir), Checkpointer(workdir, config) as checkpointer:
    if checkpointer.latest_step() is not None:
      raise CheckpointError(f"{workdir} already holds a run (checkpoint step "
                            f"{checkpointer.latest_step()}); choose a new --workdir.")
    params = jax.tree.map(jnp.asarray, params)
    stats = jax.tree.map(jnp.asarray, batch_stats)
    checkpointer.save(WeightsOnlyState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
        ema_params=jax.tree.map(jnp.copy, params),
        ema_batch_stats=jax.tree.map(jnp.copy, stats)), force=True)
