"""End to end: training learns, and gives the same run on 1 device, 8 devices and
2 processes x 4 devices."""

import json
import os

import numpy as np
import pytest

from tests import training_runs


@pytest.fixture(scope="module")
def runs(shapes_tiny_dir, tmp_path_factory):
  """The same tiny run on 1 device, on 8 simulated devices, and on 2 processes."""
  root = tmp_path_factory.mktemp("runs")
  overrides = training_runs.tiny_overrides(shapes_tiny_dir)
  workdirs = {name: str(root / name) for name in ("one", "eight", "two_processes")}
  training_runs.run_main(workdirs["one"], overrides, devices=1)
  training_runs.run_main(workdirs["eight"], overrides, devices=8)
  training_runs.run_two_processes(workdirs["two_processes"], overrides, devices_each=4)
  return workdirs


def _assert_same_run(a, b):
  """Same losses: exactly at step 1 (same data, same initial weights), then within the
  drift of float rounding that differs with the layout. Per-device BatchNorm or a
  different batch would move the loss by far more than these tolerances."""
  train_a, train_b = training_runs.read_metrics(a), training_runs.read_metrics(b)
  assert [r["step"] for r in train_a] == [r["step"] for r in train_b] == list(range(1, 7))
  np.testing.assert_allclose(train_a[0]["loss"], train_b[0]["loss"], rtol=1e-5)
  for ra, rb in zip(train_a, train_b):
    np.testing.assert_allclose(ra["loss"], rb["loss"], rtol=1e-2, err_msg="loss")
    np.testing.assert_allclose(ra["top1"], rb["top1"], atol=2 / 64, err_msg="top1")
    np.testing.assert_allclose(ra["learning_rate"], rb["learning_rate"], rtol=1e-6)
  eval_a, eval_b = training_runs.read_metrics(a, "eval"), training_runs.read_metrics(b, "eval")
  np.testing.assert_allclose(eval_a[-1]["loss"], eval_b[-1]["loss"], rtol=2e-2)
  for key in ("top1", "top5", "ema_top1"):
    np.testing.assert_allclose(eval_a[-1][key], eval_b[-1][key], atol=2 / 70, err_msg=key)
  assert eval_a[-1]["num_examples"] == eval_b[-1]["num_examples"] == 70


def test_training_on_one_device_learns(runs):
  train = training_runs.read_metrics(runs["one"])
  # Six full-batch steps on 64 images: the loss falls and accuracy rises.
  assert train[-1]["loss"] < train[0]["loss"] - 0.2
  assert train[-1]["top1"] > train[0]["top1"]
  with open(os.path.join(runs["one"], "results.json")) as f:
    results = json.load(f)
  assert results["device_count"] == 1 and results["steps"] == 6
  assert results["params"] > 0 and results["mult_adds"] > 0
  assert set(results["final"]) == {"raw", "ema"}
  assert results["final"]["raw"]["num_examples"] == 70


def test_eight_devices_match_one(runs):
  _assert_same_run(runs["one"], runs["eight"])
  with open(os.path.join(runs["eight"], "results.json")) as f:
    assert json.load(f)["device_count"] == 8


def test_two_processes_match_one_process_with_eight_devices(runs):
  _assert_same_run(runs["eight"], runs["two_processes"])
  with open(os.path.join(runs["two_processes"], "results.json")) as f:
    results = json.load(f)
  assert results["process_count"] == 2 and results["device_count"] == 8
