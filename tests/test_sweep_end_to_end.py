"""A two-point recipe sweep in smoke mode, end to end: launch, interrupt, relaunch
(the finished point is skipped, the other resumes), then compare.

Tiny on purpose: MobileNet V1 0.25 at 32x32 on shapes10/tiny, batch 32, a few dozen
steps per point.
"""

import os
import signal
import subprocess
import sys
import time

from experiments import compare, manifest
from mobilenet_jax import run_dir
from tests import training_runs

SYNC = "v1_w1_r224_tau0_workers1_lrscale-none"
STALE = "v1_w1_r224_tau2_workers1_lrscale-inverse"


def _launch_command(root, data_dir):
  return [sys.executable, "-m", "experiments.launch", "--sweep=async", f"--root={root}",
          "--local_smoke", f"--only={SYNC},{STALE}", "--",
          "--config.model.width=0.25", "--config.data.image_size=32",
          "--config.data.name=shapes10/tiny",
          f"--config.data.data_dir={data_dir}", "--config.global_batch_size=32",
          "--config.num_train_steps=60", "--config.log_every_steps=1",
          "--config.checkpoint_every_steps=1000", "--config.eval_batch_size=70",
          "--config.data.eval_split=test"]


def _wait_for(predicate, proc, timeout=600):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)


def test_launch_interrupt_relaunch_compare(tmp_path, shapes_tiny_dir):
  root = str(tmp_path / "async_smoke")
  env = training_runs.env_with_devices(1)
  command = _launch_command(root, shapes_tiny_dir)
  proc = subprocess.Popen(command, cwd=training_runs.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  stale = os.path.join(root, STALE)
  # Interrupt while the second point trains (it has logged a step).
  _wait_for(lambda: run_dir.read_metrics(stale, "train"), proc)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 1, out[-3000:]
  assert f"done {SYNC}" in out and f"stopped {STALE}" in out, out[-3000:]
  assert "Smoke estimate: 2 points" in out and "compilation" in out
  assert run_dir.is_finished(os.path.join(root, SYNC))
  assert not run_dir.is_finished(stale)
  assert "Preempted" in run_dir.log_path(stale).read_text()

  again = subprocess.run(command, cwd=training_runs.REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert f"[1/2] skip {SYNC}" in again.stdout and f"done {STALE}" in again.stdout
  assert "from step 0 " not in run_dir.log_path(stale).read_text().split("Preempted")[1]
  steps = [r["step"] for r in run_dir.read_metrics(stale, "train")]
  assert steps == list(range(1, 61))  # Resumed, not restarted: every step once.

  # The point's overrides reached the trained config, as read back from the run.
  config = run_dir.read_config(stale)
  assert (config.staleness, config.num_workers, config.lr.staleness_scaling) == (
      2, 1, "inverse")
  assert config.model.width == 0.25 and config.data.image_size == 32
  assert run_dir.read_results(stale).steps == 60
  recorded = manifest.read(root)
  assert recorded["sweep"] == "async" and recorded["kind"] == "recipe"
  assert {p["name"] for p in recorded["points"]} == {SYNC, STALE}
  assert recorded["code_version"]

  markdown = compare.compare(root)
  assert "| run | lr.staleness_scaling | staleness | steps |" in markdown
  assert f"| {STALE} | inverse | 2 | 60 |" in markdown
  for name in (compare.STALENESS_PLOT, compare.CURVES_PLOT):
    assert os.path.getsize(os.path.join(root, name)) > 1000
