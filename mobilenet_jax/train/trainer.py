"""`train_and_evaluate(config, workdir)`: the whole training run.

Order of work, as in big_vision's trainer: build data info, model and optimizer; make
the initial state (or restore the latest checkpoint, or start from another run's);
then loop: step, log, evaluate, checkpoint, until the last step or a SIGTERM. Everything
the run produces lands in the workdir: checkpoints/, metrics.jsonl, TensorBoard events
and, at the end, results.json.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from mobilenet_jax import config_validation, costs, data, models, run_dir, runtime
from mobilenet_jax.errors import ConfigError, TrainingDivergedError
from mobilenet_jax.train import (batchnorm, checkpointing, input_bound, optimizers,
                                 preemption, sharding, transfer)
from mobilenet_jax.train.evaluation import evaluate
from mobilenet_jax.train.metrics_logging import MetricsLogger, Progress, ProgressLine
from mobilenet_jax.train.state import create_train_state
from mobilenet_jax.train.step import make_eval_step, make_train_step


def total_train_steps(config, num_train_examples: int) -> tuple[int, int]:
  """(steps per epoch, total steps) for the config and the train split size."""
  steps_per_epoch = num_train_examples // config.global_batch_size
  if steps_per_epoch < 1:
    raise ConfigError(
        f"global_batch_size={config.global_batch_size} is larger than the train split "
        f"({num_train_examples} examples): lower it, e.g. "
        f"--config.global_batch_size={_suggested_batch(num_train_examples)} (or "
        f"batch= in the config argument).")
  if config.num_train_steps > 0:
    return steps_per_epoch, config.num_train_steps
  return steps_per_epoch, max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


def _suggested_batch(num_train_examples: int) -> int:
  """The largest power of two that gives at least ten steps per epoch (at least 1)."""
  return max(1, 2 ** int(math.log2(max(1, num_train_examples // 10))))


def _check_finite(pending: list[tuple[int, dict]]) -> None:
  """Raises at the first step whose loss was NaN or infinite."""
  for step, metrics in pending:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      raise TrainingDivergedError(
          f"the training loss became {loss} at step {step}. Training stopped; no "
          "checkpoint was written after it. Lower the learning rate (lr.base), enable "
          "gradient clipping (optimizer.grad_clip_norm) or check the input data.")


def _mean_metrics(pending: list[tuple[int, dict]]) -> dict:
  fetched = jax.device_get([m for _, m in pending])
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


@dataclasses.dataclass
class _Run:
  """What the train loop works with, built once by `_build_run`."""
  config: ml_collections.ConfigDict  # With the settings chosen for this run filled in.
  workdir: str
  model: Any
  mesh: jax.sharding.Mesh
  train_step: Callable
  eval_step: Callable
  checkpointer: checkpointing.Checkpointer
  steps_per_epoch: int
  total_steps: int

  def evaluate(self, variables: dict) -> dict:
    """Exact loss, top-1 and top-5 of `variables` over the eval split."""
    return evaluate(self.eval_step, variables, self.config.data,
                    self.config.eval_batch_size, self.mesh)


def _steps_for_dataset(config) -> tuple[int, int]:
  """(steps per epoch, total steps), after checking the config against the dataset."""
  info = data.get_dataset_info(config.data)
  if config.model.num_classes != info.num_classes:
    raise ConfigError(
        f"model.num_classes={config.model.num_classes} but dataset {config.data.name!r} "
        f"has {info.num_classes} classes; set --config.model.num_classes="
        f"{info.num_classes}.")
  sharding.check_batch_size("global_batch_size", config.global_batch_size)
  sharding.check_batch_size("eval_batch_size", config.eval_batch_size)
  return total_train_steps(config, info.num_train_examples)


def _jit_steps(model, optimizer, config, schedule, adjust_batch_stats, mesh):
  """The train and eval steps, jitted over `mesh` with the platform's options."""
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  train_step = jax.jit(
      make_train_step(model, optimizer, config, schedule, adjust_batch_stats),
      in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
      donate_argnums=0, compiler_options=runtime.compiler_options("train"))
  eval_step = jax.jit(make_eval_step(model), in_shardings=(replicated, batch_sharding),
                      out_shardings=replicated,
                      compiler_options=runtime.compiler_options("inference"))
  return train_step, eval_step


def _build_run(config, workdir: str) -> tuple[_Run, Any]:
  """The run's model, jitted steps and checkpointer, and the state to start from:
  the latest readable checkpoint, else another run's weights (`init_from`), else a
  fresh initialization."""
  steps_per_epoch, total_steps = _steps_for_dataset(config)
  config = batchnorm.resolve_momentum(config, total_steps)
  model = models.create(config.model, bn_group_size=config.bn_group_size,
                        frozen_bn=batchnorm.bn_frozen(config))
  mesh = sharding.create_mesh()
  init_rng, state_rng = jax.random.split(jax.random.key(config.seed))
  variables = models.init_variables(model, init_rng)
  optimizer, schedule = optimizers.create_optimizer(
      config, steps_per_epoch, total_steps, variables["params"])
  adjust_batch_stats = None
  if config.init_from.freeze_backbone:
    optimizer = transfer.freeze(optimizer,
                                transfer.trainable_mask(config, variables["params"]))
    adjust_batch_stats = lambda old, new: transfer.keep_frozen_batch_stats(config, old, new)
  state = create_train_state(variables, optimizer, config.staleness, state_rng)
  state = jax.device_put(state, sharding.replicated(mesh))

  checkpointer = checkpointing.Checkpointer(workdir, config)
  with checkpointer.closed_on_error():
    if checkpointer.latest_step() is None:
      state = transfer.init_from(config, state)
    state = checkpointer.restore_or_initial(
        state, check_config=run_dir.check_compatible(config))
  train_step, eval_step = _jit_steps(model, optimizer, config, schedule,
                                     adjust_batch_stats, mesh)
  return _Run(config, workdir, model, mesh, train_step, eval_step, checkpointer,
              steps_per_epoch, total_steps), state


def _evaluate_both(run: _Run, state, step: int, logger, console) -> dict:
  """Evaluates the raw and the EMA weights at `step`; logs and returns both."""
  raw, ema = run.evaluate(state.variables), run.evaluate(state.ema_variables)
  logger.write(step, "eval", {**raw, **{f"ema_{k}": v for k, v in ema.items()}})
  console.message(
      f"eval at step {step}: top-1 {raw['top1']:.4f} top-5 {raw['top5']:.4f} "
      f"(EMA top-1 {ema['top1']:.4f} top-5 {ema['top5']:.4f})")
  return {"raw": raw, "ema": ema}


def _train_loop(run: _Run, state, logger, progress,
                feed: input_bound.FeedCheck) -> tuple[Any, dict, bool]:
  """Trains from `state.step` to the last step: logs, evaluates and checkpoints.

  Returns (state, the last evaluation or {} if none ran, whether a SIGTERM stopped
  the run; its checkpoint is then saved). `feed` says, from the first steps, whether
  the input pipeline or the step bounds the run.
  """
  config, start_step, total_steps = run.config, int(state.step), run.total_steps
  console = ProgressLine(total_steps)
  pending: list[tuple[int, dict]] = []
  batches = feed.wrap(data.train_batches(config.data, config.global_batch_size,
                                         config.seed, start_step),
                      total_steps - start_step)
  final_metrics = {}
  with preemption.PreemptionGuard() as guard:
    for step in range(start_step + 1, total_steps + 1):
      state, metrics = run.train_step(state,
                                      sharding.global_batch(next(batches), run.mesh))
      if step == start_step + 1:  # Compiled: time the steps after this one.
        jax.block_until_ready(metrics)
        progress.start_timing(step)
      if (measured := feed.after_step(step - start_step, metrics)) is not None:
        console.message(measured.line())
      pending.append((step, metrics))
      is_last = step == total_steps
      if step % config.log_every_steps == 0 or is_last:
        _check_finite(pending)
        scalars, rates = _mean_metrics(pending), progress.report(step)
        pending = []
        logger.write(step, "train", {**scalars, **rates})
        console.update(step, scalars, rates)
      eval_metrics = None
      if is_last or (config.eval_every_steps and step % config.eval_every_steps == 0):
        with progress.paused():
          _check_finite(pending)
          final_metrics = _evaluate_both(run, state, step, logger, console)
          eval_metrics = final_metrics["raw"]
      stop = guard.should_stop(step)  # The same on every host, no per-step collective.
      every = config.checkpoint_every_steps
      if stop or is_last or (every and step % every == 0):
        with progress.paused():
          _check_finite(pending)  # Never write a checkpoint of a diverged run.
          run.checkpointer.save(state, metrics=eval_metrics, force=stop or is_last)
      if stop and not is_last:
        return state, final_metrics, True
  return state, final_metrics, False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if any.

  Returns the final results (also written to WORKDIR/results.json by process 0), or
  {"preempted_at_step": N} when a SIGTERM stopped the run after saving step N.
  """
  start_time = time.time()
  config_validation.validate(config, workdir)  # Every config error now, in one line.
  os.makedirs(workdir, exist_ok=True)
  run, state = _build_run(config, workdir)
  start_step = int(state.step)
  logger = MetricsLogger(workdir)
  logger.truncate_after(start_step)
  logging.info("Training %s for %d steps (%d per epoch) from step %d on %d device(s).",
               run.config.model.name, run.total_steps, run.steps_per_epoch, start_step,
               jax.device_count())
  progress = Progress(start_step, run.total_steps, run.config.global_batch_size)
  feed = input_bound.FeedCheck(run.config.global_batch_size // jax.process_count(),
                               jax.default_backend())
  try:
    state, final_metrics, preempted = _train_loop(run, state, logger, progress, feed)
    if preempted:
      run.checkpointer.wait()
      step = int(state.step)
      logging.warning("Preempted (SIGTERM): saved step %d in %s; run the same command "
                      "again to resume.", step, workdir)
      print(f"Preempted: saved a checkpoint at step {step} in {workdir}; run the same "
            "command again to resume.", flush=True)
      return {"preempted_at_step": step}
    if not final_metrics:  # The workdir held a finished run: report on it again.
      final_metrics = {"raw": run.evaluate(state.variables),
                       "ema": run.evaluate(state.ema_variables)}
  finally:
    # A save still in flight must finish (or fail) before the process exits, also
    # when training stops on an error.
    run.checkpointer.wait()
    run.checkpointer.close()
    logger.close()

  results = run_dir.Results.of_run(
      run.config, final_metrics, run.total_steps,
      costs.count_costs(run.model, run.config.data.image_size),
      eval_split=data.resolve_split(run.config.data, run.config.data.eval_split),
      wall_time_s=time.time() - start_time, train_images_per_sec=progress.images_per_sec,
      input_bound=feed.result and feed.result.to_json())
  if jax.process_index() == 0:
    run_dir.write_results(workdir, results)
  return results.to_json()
