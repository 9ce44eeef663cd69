"""Exact resume, preemption by SIGTERM, and a diverging run, end to end."""

import json
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np

from mobilenet_jax import run_dir
from tests import training_runs


def _saved_steps(workdir):
  root = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []


def _overrides(data_dir, **extra):
  # Augmentation on and 200 images in batches of 32: the resumed part crosses an
  # epoch boundary, so the data order and augmentation must continue exactly.
  return training_runs.tiny_overrides(
      data_dir, **{"data.train_split": "train", "data.random_flip": True,
                   "data.crop_area_range": "(0.25, 1.0)",
                   "data.crop_aspect_range": "(0.75, 1.333)", "global_batch_size": 32,
                   "num_train_steps": 8, **extra})


def test_resumed_run_is_bit_identical(shapes_tiny_dir, tmp_path):
  straight = str(tmp_path / "straight")
  training_runs.run_main(straight, _overrides(shapes_tiny_dir))
  # An interrupted run: it crashed at step 7, after writing metrics for 7 steps
  # and its checkpoints at steps 3 and 6, and before the one at step 8.
  crashed = str(tmp_path / "crashed")
  shutil.copytree(straight, crashed)
  shutil.rmtree(os.path.join(crashed, "checkpoints", "8"))
  os.remove(os.path.join(crashed, "results.json"))
  with open(os.path.join(crashed, "metrics.jsonl")) as f:
    lines = [l for l in f if json.loads(l)["step"] <= 7]
  with open(os.path.join(crashed, "metrics.jsonl"), "w") as f:
    f.writelines(lines)

  proc = training_runs.run_main(crashed, _overrides(shapes_tiny_dir))
  assert "from step 6" in proc.stderr
  a = run_dir.restore_weights(straight, 8)[0]
  b = run_dir.restore_weights(crashed, 8)[0]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  tail = lambda w: training_runs.read_metrics(w)[-3:] + training_runs.read_metrics(w, "eval")
  assert tail(straight) == tail(crashed)


def test_sigterm_saves_and_restart_resumes(shapes_tiny_dir, tmp_path):
  workdir = str(tmp_path / "run")
  overrides = _overrides(shapes_tiny_dir, num_train_steps=500, checkpoint_every_steps=1000)
  proc = subprocess.Popen(training_runs.main_command(workdir, overrides),
                          cwd=training_runs.REPO, env=training_runs.env_with_devices(1),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "Preempted" in out
  saved = max(_saved_steps(workdir))
  assert 1 <= saved < 500

  # The restart picks up at the saved step, with no flag.
  resumed = training_runs.run_main(workdir, _overrides(
      shapes_tiny_dir, num_train_steps=saved + 2, checkpoint_every_steps=1000))
  assert f"from step {saved}" in resumed.stderr
  steps = [r["step"] for r in training_runs.read_metrics(workdir)]
  assert steps == list(range(1, saved + 3))


def test_nan_loss_stops_with_one_message_and_no_bad_checkpoint(shapes_tiny_dir, tmp_path):
  workdir = str(tmp_path / "diverged")
  overrides = training_runs.tiny_overrides(shapes_tiny_dir, **{
      "optimizer.name": "sgd", "lr.base": "inf", "checkpoint_every_steps": 1,
      "num_train_steps": 6})
  proc = subprocess.run(training_runs.main_command(workdir, overrides),
                        cwd=training_runs.REPO, env=training_runs.env_with_devices(1),
                        capture_output=True, text=True, timeout=400)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  message = errors[0]
  assert message.startswith("error: the training loss became") and "at step" in message
  assert "Traceback" not in proc.stderr
  bad_step = int(message.split("at step ")[1].split(".")[0])
  # Checkpoints exist only for steps before the loss went bad.
  assert all(s < bad_step for s in _saved_steps(workdir))
