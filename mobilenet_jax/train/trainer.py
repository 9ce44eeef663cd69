"""`train_and_evaluate(config, workdir)`: the whole training run.

Order of work, as in big_vision's trainer: build data info, model and optimizer; make
the initial state (or restore the latest checkpoint, or start from another run's);
then loop: step, log, evaluate, checkpoint, until the last step or a SIGTERM. Everything
the run produces lands in the workdir: checkpoints/, metrics.jsonl, TensorBoard events
and, at the end, results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from mobilenet_jax import costs, data, models, runtime
from mobilenet_jax.errors import ConfigError, TrainingDivergedError
from mobilenet_jax.rundir import checkpointer as checkpointer_lib
from mobilenet_jax.rundir import results as results_lib
from mobilenet_jax.rundir.lock import RunLock
from mobilenet_jax.train import (batchnorm, input_bound, optimizers, preemption,
                                 run_plan, sharding, transfer, validation)
from mobilenet_jax.train.evaluation import evaluate
from mobilenet_jax.train.metrics_logging import MetricsLogger, Progress, ProgressLine
from mobilenet_jax.train.state import create_train_state
from mobilenet_jax.train.step import make_eval_step, make_train_step


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
  checkpointer: checkpointer_lib.Checkpointer
  steps_per_epoch: int
  total_steps: int

  def evaluate(self, variables: dict) -> dict:
    """Exact loss, top-1 and top-5 of `variables` over the eval split."""
    return evaluate(self.eval_step, variables, self.config.data,
                    self.config.eval_batch_size, self.mesh)


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


def _build_run(config, workdir: str, plan: run_plan.RunPlan) -> tuple[_Run, Any]:
  """The run's model, jitted steps and checkpointer, and the state to start from:
  the latest readable checkpoint, else another run's weights (`init_from`), else a
  fresh initialization."""
  steps_per_epoch, total_steps = plan.steps_per_epoch, plan.total_steps
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

  checkpointer = checkpointer_lib.Checkpointer(workdir, config)
  with checkpointer.closed_on_error():
    if checkpointer.latest_step() is None:
      state = transfer.init_from(config, state)
    # Whether this config may resume the workdir's run was checked by run_plan.
    state = checkpointer.restore_or_initial(state)
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


def _save_and_evaluate(run: _Run, state, step: int, *, save: bool, evaluate_now: bool,
                       force: bool, logger, console) -> dict:
  """Checkpoints and/or evaluates at `step`; returns the evaluation ({} if none).

  A forced save (the last step, a stop request) comes first, so a failing evaluation
  loses no training. A periodic save follows its evaluation, whose top-1 ranks it for
  `keep_best_checkpoint`; should that evaluation fail, the step is saved first anyway.
  """
  if save and (force or not evaluate_now):
    run.checkpointer.save(state, force=force)
    save = False
  if not evaluate_now:
    return {}
  try:
    evaluation = _evaluate_both(run, state, step, logger, console)
  except BaseException:
    if save:
      run.checkpointer.save(state, force=True)
    raise
  if save:
    run.checkpointer.save(state, metrics=evaluation["raw"])
  return evaluation


def _train_loop(run: _Run, state, logger, progress, guard,
                feed: input_bound.FeedCheck) -> tuple[Any, dict, bool]:
  """Trains from `state.step` to the last step: logs, evaluates and checkpoints.

  Returns (state, the last evaluation or {} if none ran, whether a stop request
  (SIGTERM, Ctrl-C) ended the run early; its checkpoint is then saved). `feed` says,
  from the first steps, whether the input pipeline or the step bounds the run.
  """
  config, start_step, total_steps = run.config, int(state.step), run.total_steps
  console = ProgressLine(total_steps)
  pending: list[tuple[int, dict]] = []
  final_metrics = {}
  pipeline = data.train_batches(config.data, config.global_batch_size, config.seed,
                               start_step)
  batches = feed.wrap(pipeline, total_steps - start_step)
  try:
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
      stop = guard.should_stop(step)  # The same on every host, no per-step collective.
      evaluate_now = is_last or bool(config.eval_every_steps
                                     and step % config.eval_every_steps == 0)
      every = config.checkpoint_every_steps
      save = stop or is_last or bool(every and step % every == 0)
      if save or evaluate_now:
        with progress.paused():
          _check_finite(pending)  # Never evaluate or save a diverged run.
          final_metrics = _save_and_evaluate(
              run, state, step, save=save, evaluate_now=evaluate_now,
              force=stop or is_last, logger=logger, console=console) or final_metrics
      if stop and not is_last:
        return state, final_metrics, True
  finally:
    pipeline.close()  # Ends its prefetch threads now, not at interpreter exit.
  return state, final_metrics, False


def _stopped_early(run: _Run, state, guard, workdir: str) -> dict:
  """Waits for the stop request's checkpoint and says how to resume."""
  run.checkpointer.wait()
  step = int(state.step)
  why = "Interrupted (Ctrl-C)" if guard.signal_received == signal.SIGINT else "Preempted"
  logging.warning("%s: saved step %d in %s.", why, step, workdir)
  print(f"{why}: saved a checkpoint at step {step} in {workdir}; run the same command "
        "again to resume.", flush=True)
  return {"preempted_at_step": step,
          "signal": signal.Signals(guard.signal_received or signal.SIGTERM).name}


@contextlib.contextmanager
def _out_of_memory_named(config):
  """Turns XLA's RESOURCE_EXHAUSTED into one line that names the batch to lower."""
  try:
    yield
  except jax.errors.JaxRuntimeError as error:
    if "RESOURCE_EXHAUSTED" not in str(error):
      raise
    raise ConfigError(
        f"out of memory on {jax.default_backend()} with global_batch_size="
        f"{config.global_batch_size} ({jax.device_count()} device(s)): lower it, e.g. "
        f"--config.global_batch_size={max(1, config.global_batch_size // 2)}, or raise "
        "grad_accum_steps.") from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       validated: bool = False) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if any.

  Checks the config first (`validation.validate` and `run_plan.check_paths`, skipped
  when the caller already did both: `validated=True`; then
  `run_plan.check_environment`) and holds the run lock
  while it trains. Returns the final results (also written to WORKDIR/results.json by
  process 0), or {"preempted_at_step": N, "signal": ...} when SIGTERM or Ctrl-C
  stopped the run after saving step N.
  """
  start_time = time.time()
  if not validated:
    validation.validate(config)
    run_plan.check_paths(config, workdir)
  plan = run_plan.check_environment(config, workdir)
  logging.info("JAX %s: %d process(es), %d device(s): %s", jax.__version__,
               jax.process_count(), jax.device_count(), jax.devices()[:4])
  lock = RunLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, _out_of_memory_named(config):
    run, state = _build_run(config, workdir, plan)
    results = _train_and_report(run, state, workdir, start_time)
  return results


def _earlier_training_figures(workdir: str) -> dict | None:
  """The wall time and speed that a finished run's results.json records, if readable.

  Reporting on a finished run again (a second launch of the same point, a rerun)
  evaluates it again but trains nothing: its time and images/s stay the training's.
  """
  try:
    earlier = results_lib.read_results(workdir)
  except results_lib.ResultsError:
    return None
  return {"wall_time_s": earlier.wall_time_s,
          "train_images_per_sec": earlier.train_images_per_sec,
          "input_bound": earlier.input_bound}


def _train_and_report(run: _Run, state, workdir: str, start_time: float) -> dict:
  """Trains from `state`, evaluates, writes results.json; see train_and_evaluate."""
  start_step = int(state.step)
  logger = MetricsLogger(workdir)
  logger.truncate_after(start_step)
  logging.info("Training %s for %d steps (%d per epoch) from step %d on %d device(s).",
               run.config.model.name, run.total_steps, run.steps_per_epoch, start_step,
               jax.device_count())
  progress = Progress(start_step, run.total_steps, run.config.global_batch_size)
  feed = input_bound.FeedCheck(run.config.global_batch_size // jax.process_count(),
                               jax.default_backend())
  # The guard stays up until every save has committed: a shutdown may send SIGTERM
  # again (a VM's to every process, a launcher's stop after the slice's), and one that
  # found the default handler back while the stop's save was in flight killed the
  # process before the save committed (the fake cloud's preemption test, under load:
  # the point restarted from step 0).
  with preemption.PreemptionGuard((signal.SIGTERM, signal.SIGINT)) as guard:
    try:
      state, final_metrics, stopped = _train_loop(run, state, logger, progress, guard,
                                                  feed)
      if stopped:
        return _stopped_early(run, state, guard, workdir)
      training = {"wall_time_s": time.time() - start_time,
                  "train_images_per_sec": progress.images_per_sec,
                  "input_bound": feed.result and feed.result.to_json()}
      if not final_metrics:  # The workdir held a finished run: report on it again.
        final_metrics = {"raw": run.evaluate(state.variables),
                         "ema": run.evaluate(state.ema_variables)}
        training = _earlier_training_figures(workdir) or training
    finally:
      # A save still in flight must finish (or fail) before the process exits, also
      # when training stops on an error.
      try:
        run.checkpointer.close()
      finally:
        logger.close()
  results = results_lib.Results.of_run(
      run.config, final_metrics, run.total_steps,
      costs.count_costs(run.model, run.config.data.image_size),
      trainable_params=transfer.trainable_param_count(run.config, state.params),
      eval_split=data.resolve_split(run.config.data, run.config.data.eval_split),
      **training)
  if jax.process_index() == 0:
    results_lib.write_results(workdir, results)
  return results.to_json()
