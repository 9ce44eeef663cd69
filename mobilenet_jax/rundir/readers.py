"""Reading a run's checkpoints without writing: configs, resumability, weights.

Readers take no lock. A run that is still training may delete its oldest step
(keep_checkpoints) while a reader restores it; the reader then moves on to the step
that replaced it instead of calling the vanished one corrupt.
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections

from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import checkpoint_store as store
from mobilenet_jax.rundir import layout, results

_VANISHED_STEP_RETRIES = 3  # A writer replaces a step every checkpoint interval.


def check_resumable(workdir, check_config: Callable[[dict, str], None]) -> None:
  """Runs `check_config(stored_config, path)` on the newest readable checkpoint in
  `workdir`, if any (cheap: reads only its metadata), so that a resume with the
  wrong config fails before data and model are built."""
  if not layout.step_dirs(workdir):
    return
  mngr = store.manager(workdir, read_only=True)
  try:
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        stored = store.stored_config(mngr, step)
      except store.CorruptCheckpointError:
        continue  # The trainer's restore falls back past it.
      check_config(stored, store.step_path(mngr, step))
      return
  finally:
    mngr.close()


def read_config(workdir, step: int | None = None) -> ml_collections.ConfigDict:
  """The config the run in `workdir` trained with: from its results if it finished
  (and no `step` is asked for), else from its checkpoint."""
  if step is None and results.is_finished(workdir):
    return ml_collections.ConfigDict(results.read_results(workdir).config)
  mngr = store.manager(workdir, read_only=True)
  try:
    return ml_collections.ConfigDict(
        store.stored_config(mngr, store.resolve_step(mngr, step)))
  finally:
    mngr.close()


def check_kept_ema(config, workdir, fix: str) -> None:
  """Raises ConfigError, ending with `fix`, if the run in `workdir` (trained with
  `config`) kept no moving average of its weights: its ema_* fields are not one."""
  if not config.get("ema_decay", 0):
    raise ConfigError(f"The run in {workdir} kept no moving average (ema_decay=0): "
                      f"{fix}.")


def restore_weights(workdir, sharding: jax.sharding.Sharding, step: int | None = None
                    ) -> tuple[dict, int, ml_collections.ConfigDict]:
  """Only the weights of a checkpoint (`store.WEIGHT_FIELDS`), from the checkpoint alone.

  Returns ({"params", "batch_stats", "ema_params", "ema_batch_stats"}, step, config),
  arrays placed with `sharding`. The optimizer state is not read, so this works
  whatever optimizer the run used. Without `step`, the latest committed step.
  """
  for attempt in range(_VANISHED_STEP_RETRIES + 1):
    mngr = store.manager(workdir, read_only=True)
    try:
      chosen = store.resolve_step(mngr, step)
      try:
        return _restore_weights_of(mngr, chosen, sharding)
      except store.CorruptCheckpointError:
        mngr.reload()
        if chosen in mngr.all_steps():
          raise  # Still there: really unreadable.
        if step is not None:
          raise CheckpointError(
              f"Checkpoint step {step} of {workdir} was deleted while it was read (the "
              "run is still training and keeps only its latest steps); ask for a "
              "newer step or the latest.") from None
        if attempt == _VANISHED_STEP_RETRIES:
          raise
    finally:
      mngr.close()
  raise AssertionError("unreachable")


def _restore_weights_of(mngr, step: int, sharding) -> tuple[dict, int,
                                                             ml_collections.ConfigDict]:
  config = store.stored_config(mngr, step)
  metadata = store.stored_metadata(mngr, step)
  stored = {key: metadata[key] for key in store.WEIGHT_FIELDS}
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), stored)
  weights = store.restore_state(mngr, step, target, partial=True)
  return weights, step, ml_collections.ConfigDict(config)
