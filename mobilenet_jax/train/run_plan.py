"""Phase 2 of two: the config against this run's environment, and the run's length.

It checks what the static `validation.validate` cannot see, each thing once.
`check_paths(config, workdir)` runs right after validation, before TensorFlow and the
devices load: the run directory is usable and `init_from` names a run with a
checkpoint. `check_environment(config, workdir)` runs once the devices are up and
TensorFlow is loaded, before any model is built or program compiled: the batch sizes
split over the devices (and so over the processes), the model's classes match the
dataset's, one batch fits in the train split, and a checkpoint already in the workdir
can be resumed with this config.
It raises ConfigError (CheckpointError for a workdir holding another config's run)
and returns the `RunPlan`: steps per epoch are computed here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math

import jax

from mobilenet_jax import data
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import identity, layout, lock, readers


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How long the run is: from the config and the size of the train split."""
  num_train_examples: int
  steps_per_epoch: int
  total_steps: int


def _suggested_batch(num_train_examples: int) -> int:
  """The largest power of two that gives at least ten steps per epoch (at least 1)."""
  return max(1, 2 ** int(math.log2(max(1, num_train_examples // 10))))


def plan(config, num_train_examples: int) -> RunPlan:
  """The run's length; ConfigError if one global batch does not fit in the split."""
  steps_per_epoch = data.steps_per_epoch(num_train_examples, config.global_batch_size)
  if steps_per_epoch < 1:
    raise ConfigError(
        f"global_batch_size={config.global_batch_size} is larger than the train split "
        f"({num_train_examples} examples): lower it, e.g. "
        f"--config.global_batch_size={_suggested_batch(num_train_examples)} (or "
        f"batch= in the config argument).")
  if config.num_train_steps > 0:
    total = config.num_train_steps
  else:
    total = max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))
  return RunPlan(num_train_examples, steps_per_epoch, total)


def _check_devices(config) -> None:
  devices = jax.device_count()
  for name in ("global_batch_size", "eval_batch_size"):
    value = config[name]
    if value % devices:
      raise ConfigError(
          f"{name}={value} must be a multiple of the device count ({devices}: "
          f"{jax.process_count()} process(es) x {jax.local_device_count()}); e.g. "
          f"--config.{name}={max(devices, value // devices * devices)}.")


def _check_init_from(config) -> None:
  source = config.init_from.get("workdir")
  if not source:
    return
  steps = layout.step_dirs(source)
  if not steps:
    found = ("does not exist" if not layout.path(source).exists() else
             f"holds no checkpoint (no {layout.checkpoint_dir(source)}/<step>/)")
    raise ConfigError(f"--config.init_from.workdir={source} {found}: name the workdir "
                      "of a finished run.")
  step = config.init_from.get("step", -1)
  if step >= 0 and step not in steps:
    raise ConfigError(f"--config.init_from.step={step} has no checkpoint in {source}: "
                      f"use -1 for the latest, or one of {steps}.")
  if config.init_from.get("ema", False):  # Refused before anything loads.
    readers.check_kept_ema(readers.read_config(source, step if step >= 0 else None),
                           source, "drop --config.init_from.ema to start from its weights")


def check_paths(config, workdir) -> None:
  """The checks that need neither TensorFlow nor the devices: `workdir` can be a run
  directory (made here if missing) and `init_from` names a run with a checkpoint.
  The trainer's entry point runs them first, so that a wrong path costs a second."""
  _check_init_from(config)  # First: a refused start leaves no empty run directory.
  lock.ensure_writable_workdir(workdir)


def check_environment(config, workdir) -> RunPlan:
  """Checks `config` against the devices, the dataset and `workdir`'s checkpoints
  (module doc), after `check_paths`."""
  _check_devices(config)
  info = data.get_dataset_info(config.data)
  if config.model.num_classes != info.num_classes:
    raise ConfigError(
        f"model.num_classes={config.model.num_classes} but dataset {config.data.name!r} "
        f"has {info.num_classes} classes; set --config.model.num_classes="
        f"{info.num_classes}.")
  run_plan = plan(config, info.num_train_examples)
  readers.check_resumable(workdir, identity.check_compatible(config))
  return run_plan
