"""Input-bound or not: the check at a run's start, its verdict, line and results field.

The check inside a real run (console line, results.json): tests/test_training.py.
"""

import json
import time

import numpy as np

from mobilenet_jax.rundir import results as run_results
from mobilenet_jax.train import input_bound


def _batches(count: int, seconds_each: float = 0.0):
  for i in range(count):
    time.sleep(seconds_each)
    yield {"image": np.full((4, 2), i, np.float32), "label": np.arange(4)}


def _run(check, batches, steps: int, seconds_each: float):
  """Steps of `seconds_each` over `batches`; the labels of the batches trained on."""
  seen, result = [], None
  for done in range(1, steps + 1):
    batch = next(batches)
    time.sleep(seconds_each)
    seen.append(int(batch["image"][0, 0]))
    result = check.after_step(done, batch["image"]) or result
  return seen, result


def test_slow_pipeline_is_input_bound_and_batches_are_unchanged():
  check = input_bound.FeedCheck(local_batch_size=4, max_batches=5)
  batches = check.wrap(_batches(12, seconds_each=0.02), steps_to_run=12)
  seen, result = _run(check, batches, 12, seconds_each=0.0)
  assert seen == list(range(12))  # The same batches in the same order.
  assert result is check.result and result.bound == "input"
  assert result.batches_timed == result.steps_timed == 4
  assert 100 < result.pipeline_images_per_sec < 250  # 4 images per 20 ms.
  assert "input-bound" in result.line()


def test_slow_step_is_step_bound():
  check = input_bound.FeedCheck(local_batch_size=4, max_batches=5, platform="cpu")
  batches = check.wrap(_batches(8), steps_to_run=8)
  _, result = _run(check, batches, 8, seconds_each=0.02)
  assert result.bound == "step" and result.step_images_per_sec < 250
  assert "step-bound" in result.line() and "on CPU" in result.line()


def test_runs_too_short_to_measure_are_left_alone():
  check = input_bound.FeedCheck(local_batch_size=4)
  source = _batches(2)
  assert check.wrap(source, steps_to_run=2) is source
  assert _run(check, source, 2, 0.0) == ([0, 1], None) and check.result is None


def test_results_without_the_field_still_read(tmp_path):
  record = input_bound.verdict(100.0, 400.0, 3, 3, "cpu").to_json()
  results = run_results.Results(
      config={"model": {}}, final={"raw": run_results.EvalMetrics(1.0, 0.5, 0.9, 10)},
      steps=3, params=1, mult_adds=1, trainable_params=1, wall_time_s=1.0,
      train_images_per_sec=1.0, device_count=1, process_count=1, platform="cpu",
      input_bound=record)
  saved = results.to_json()
  assert run_results.Results.from_json(json.loads(json.dumps(saved))).input_bound == record
  del saved["input_bound"]  # A results.json written before the field existed.
  assert run_results.Results.from_json(saved).input_bound is None
  assert record["bound"] == "input"
