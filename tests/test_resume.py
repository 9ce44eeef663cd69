"""Exact resume (after SIGKILL mid-epoch, on one and two processes), preemption by
SIGTERM, and a diverging run, end to end."""

import os
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np

from mobilenet_jax.rundir import readers
from tests import ckpt_helpers as h
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


def test_sigterm_saves_and_restart_resumes(shapes_tiny_dir, compile_cache, tmp_path):
  workdir = str(tmp_path / "run")
  overrides = _overrides(shapes_tiny_dir, num_train_steps=500, checkpoint_every_steps=1000)
  # A shutdown may signal twice (a VM's SIGTERM to every process, a launcher's stop):
  # the trainer sends itself a second SIGTERM each time it waits for a save to commit,
  # which must not find it without its handler.
  python, _, _, *flags = training_runs.main_command(workdir, overrides)
  resend = ("import os, runpy, signal, sys; from mobilenet_jax.rundir import checkpointer; "
            "wait = checkpointer.Checkpointer.wait; "
            "checkpointer.Checkpointer.wait = lambda self: "
            "(os.kill(os.getpid(), signal.SIGTERM), wait(self)); "
            "sys.argv[0] = 'main'; runpy.run_module('mobilenet_jax.main', "
            "run_name='__main__')")
  proc = subprocess.Popen([python, "-c", resend, *flags], cwd=training_runs.REPO,
                          env=training_runs.env_with_devices(1, compile_cache),
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
      shapes_tiny_dir, num_train_steps=saved + 2, checkpoint_every_steps=1000),
                                   compile_cache=compile_cache)
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
  # The loss, or (checked first when a save comes first) the weights themselves.
  assert (message.startswith("error: the training loss became") and "at step" in message
          or "weights became NaN or infinite by step" in message), message
  assert "Traceback" not in proc.stderr
  marker = "at step " if "at step " in message else "by step "
  bad_step = int(message.split(marker)[1].split(" ")[0].split(".")[0])
  # Checkpoints exist only for steps before the loss went bad.
  assert all(s < bad_step for s in _saved_steps(workdir))


def _assert_same_run(reference, resumed, step):
  """Bit-identical losses (and every other logged number) at every step, the same
  evaluation, and the same final weights."""
  assert training_runs.read_metrics(resumed) == training_runs.read_metrics(reference)
  assert [r["step"] for r in training_runs.read_metrics(resumed)] == list(
      range(1, step + 1))
  assert training_runs.read_metrics(resumed, "eval") == training_runs.read_metrics(
      reference, "eval")
  a = readers.restore_weights(reference, h.EVERYWHERE, step)[0]
  b = readers.restore_weights(resumed, h.EVERYWHERE, step)[0]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _resumed_from(stderr: str) -> int:
  return int(re.search(r"from step (\d+)", stderr).group(1))


def test_sigkill_mid_epoch_then_relaunch_is_bit_identical(trained_tiny_run,
                                                           compile_cache, tmp_path):
  # 6 steps per epoch with 8 images left over: a resume must not let them in.
  straight, overrides = trained_tiny_run
  workdir = str(tmp_path / "killed")
  with open(tmp_path / "killed.log", "w") as log:
    proc = subprocess.Popen(training_runs.main_command(workdir, overrides),
                            cwd=training_runs.REPO, stdout=log, stderr=log,
                            env=training_runs.env_with_devices(1, compile_cache))
    deadline = time.time() + 300
    # SIGKILL as soon as a checkpoint is committed (its step directory exists),
    # while later steps and saves are under way.
    while not _saved_steps(workdir) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]

  relaunched = training_runs.run_main(workdir, overrides, compile_cache=compile_cache)
  start = _resumed_from(relaunched.stderr)
  assert 0 < start < 30 and start % 6, start  # Mid-epoch, with epochs still to cross.
  _assert_same_run(straight, workdir, 30)


def test_two_process_resume_mid_epoch_is_bit_identical(shapes_tiny_dir, compile_cache,
                                                       tmp_path):
  # Each process: 100 images, 16 per step, 6 steps per epoch and 4 left over.
  overrides = training_runs.resume_overrides(shapes_tiny_dir, num_train_steps=13)
  straight = str(tmp_path / "straight")
  training_runs.run_two_processes(straight, overrides, devices_each=1,
                                  compile_cache=compile_cache)
  # A crash after step 8 leaves what SIGKILL would: the committed checkpoint of step
  # 7 (Orbax never lists a step before its commit) and the metrics of 8 steps.
  crashed = str(tmp_path / "crashed")
  shutil.copytree(straight, crashed)
  for step in _saved_steps(crashed):
    if step > 7:
      shutil.rmtree(os.path.join(crashed, "checkpoints", str(step)))
  os.remove(os.path.join(crashed, "results.json"))
  training_runs.run_two_processes(crashed, overrides, devices_each=1,
                                  compile_cache=compile_cache)
  _assert_same_run(straight, crashed, 13)
