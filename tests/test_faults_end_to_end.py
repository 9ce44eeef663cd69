"""Faults that need a whole training process: Ctrl-C, a second trainer on the same
run directory, a corrupt eval image at the last step, a run that diverges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mobilenet_jax.rundir import layout, readers
from tests import ckpt_helpers as h
from tests import digits_folder
from tests import training_runs


def _start(workdir, overrides, compile_cache):
  return subprocess.Popen(training_runs.main_command(workdir, overrides),
                          cwd=training_runs.REPO,
                          env=training_runs.env_with_devices(1, compile_cache),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(workdir, proc, count: int, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  path = layout.metrics_path(workdir)
  while time.time() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    if path.exists() and len(path.read_text().splitlines()) >= count:
      return
    time.sleep(0.2)
  raise AssertionError(f"no {count} logged steps in {timeout} s")


def test_ctrl_c_saves_a_second_trainer_is_refused_twice_stops_at_once(
    shapes_tiny_dir, compile_cache, tmp_path):
  workdir = str(tmp_path / "run")
  overrides = training_runs.tiny_overrides(
      shapes_tiny_dir, num_train_steps=100000, checkpoint_every_steps=1000)
  first = _start(workdir, overrides, compile_cache)
  try:
    _wait_for_steps(workdir, first, 3)
    second = subprocess.run(training_runs.main_command(workdir, overrides),
                            cwd=training_runs.REPO,
                            env=training_runs.env_with_devices(1, compile_cache),
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 75, second.stderr[-3000:]  # EX_TEMPFAIL.
    errors = [l for l in second.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "in use by another run" in errors[0], second.stderr
    assert f"PID {first.pid}" in errors[0]
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
  finally:
    first.kill()
  assert first.returncode == 130, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  saved = [l for l in out.splitlines() if l.startswith("Interrupted (Ctrl-C): saved")]
  assert len(saved) == 1, out[-2000:]
  step = int(saved[0].split("at step ")[1].split()[0])
  assert layout.step_dirs(workdir) == [step]

  # The same command resumes from it.
  assert f"from step {step} " in subprocess.run(
      training_runs.main_command(workdir, overrides + [
          f"--config.num_train_steps={step + 2}"]),
      cwd=training_runs.REPO, env=training_runs.env_with_devices(1, compile_cache),
      capture_output=True, text=True, timeout=240, check=True).stderr


_TWICE = """
import os, signal, time
from mobilenet_jax.train import preemption
with preemption.PreemptionGuard((signal.SIGTERM, signal.SIGINT)) as guard:
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(0.1)
  assert guard.requested and guard.signal_received == signal.SIGINT
  print("first Ctrl-C: flag set", flush=True)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(5)
print("not stopped")
"""


def test_second_ctrl_c_stops_at_once():
  proc = h.run_python(_TWICE, timeout=60)
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert proc.stdout == "first Ctrl-C: flag set\n"
  assert "interrupted twice: stopped at once" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_corrupt_eval_image_stops_in_one_line_after_saving_the_last_step(
    compile_cache, tmp_path):
  folder = str(tmp_path / "digits")
  digits_folder.write_digits(folder, classes=(0, 1, 2))
  open(os.path.join(folder, "val", "1", "empty.jpg"), "wb").close()
  workdir = str(tmp_path / "run")
  args = ["--config=configs/default.py", f"--workdir={workdir}",
          "--config.data.name=image_folder", f"--config.data.data_dir={folder}",
          "--config.data.train_split=train", "--config.data.eval_split=val",
          "--config.model.num_classes=3", "--config.global_batch_size=16",
          "--config.eval_batch_size=120", "--config.num_train_steps=4",
          "--config.checkpoint_every_steps=100", "--config.log_every_steps=2"]
  env = training_runs.env_with_devices(1, compile_cache)
  for tool, tool_args in (("main", args), ("evaluate", [f"--workdir={workdir}"])):
    proc = subprocess.run(
        [sys.executable, "-m", f"mobilenet_jax.{tool}", *tool_args],
        cwd=training_runs.REPO, env=env, capture_output=True, text=True,
        timeout=240)  # Used to hang at exit, in the prefetch iterator's destructor.
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "empty.jpg" in errors[0], errors[0]
    # Saved before the final evaluation: nothing trained is lost.
    assert layout.step_dirs(workdir) == [4]


def test_diverging_run_never_writes_a_poisoned_checkpoint(shapes_tiny_dir, compile_cache,
                                                          tmp_path):
  workdir = str(tmp_path / "run")
  overrides = training_runs.tiny_overrides(
      shapes_tiny_dir, **{"lr.base": 1e30, "optimizer.name": "sgd",
                          "optimizer.momentum": 0.0, "num_train_steps": 8,
                          "checkpoint_every_steps": 1, "log_every_steps": 100})
  for _ in range(2):  # The rerun resumes from a good step and fails the same way.
    proc = subprocess.run(training_runs.main_command(workdir, overrides),
                          cwd=training_runs.REPO,
                          env=training_runs.env_with_devices(1, compile_cache),
                          capture_output=True, text=True, timeout=240)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "NaN or infinite" in errors[0], errors[0]
    for step in layout.step_dirs(workdir):  # Each restores: all finite.
      readers.restore_weights(workdir, h.EVERYWHERE, step)
  if not layout.step_dirs(workdir):
    pytest.skip("diverged before the first save: nothing to check on resume")
