"""A two-point recipe sweep in smoke mode, end to end: launch, interrupt, relaunch
(the finished point is skipped, the other resumes), then compare; and the same sweep
on a fake Google Cloud (tests/fake_gcloud.py): two Spot slices the launcher requests,
one preempted mid-point, results identical to the local runs.

Tiny on purpose: MobileNet V1 0.25 at 32x32 on shapes10/tiny, batch 32, a few dozen
steps per point.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from experiments import compare, manifest
from mobilenet_jax.rundir import layout, metrics_file, readers
from mobilenet_jax.rundir import results as run_results
from tests import fake_cloud, training_runs

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


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, shapes_tiny_dir):
  """The sweep run here: launched, interrupted while its second point trains, and
  launched again; (root, output of the first launch, the second's result, the run
  lock's holder and the launcher's PID while that point trained)."""
  root = str(tmp_path_factory.mktemp("local") / "async_smoke")
  env = training_runs.env_with_devices(1)
  command = _launch_command(root, shapes_tiny_dir)
  proc = subprocess.Popen(command, cwd=training_runs.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  stale = os.path.join(root, STALE)
  # Interrupt while the second point trains (it has logged a step).
  _wait_for(lambda: metrics_file.read_rows(stale, "train"), proc)
  holder = json.loads(layout.lock_path(stale).read_text())["pid"]
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 1, out[-3000:]
  again = subprocess.run(command, cwd=training_runs.REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  return root, out, again, (holder, proc.pid)


def test_launch_interrupt_relaunch_compare(local_sweep):
  root, out, again, (lock_holder, launcher_pid) = local_sweep
  stale = os.path.join(root, STALE)
  # The launcher took the point's lock and its trainer adopted it (the note names the
  # trainer), and nothing was left held or noted stale after.
  assert lock_holder != launcher_pid
  assert layout.lock_path(stale).read_text() == ""
  assert "no longer running" not in layout.log_path(stale).read_text()
  assert f"done {SYNC}" in out and f"stopped {STALE}" in out, out[-3000:]
  assert "Smoke estimate: 2 points" in out and "compilation" in out
  assert "Preempted" in layout.log_path(stale).read_text()

  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert f"[1/2] skip {SYNC}" in again.stdout and f"done {STALE}" in again.stdout
  assert "from step 0 " not in layout.log_path(stale).read_text().split("Preempted")[1]
  steps = [r["step"] for r in metrics_file.read_rows(stale, "train")]
  assert steps == list(range(1, 61))  # Resumed, not restarted: every step once.

  # The point's overrides reached the trained config, as read back from the run.
  config = readers.read_config(stale)
  assert (config.staleness, config.num_workers, config.lr.staleness_scaling) == (
      2, 1, "inverse")
  assert config.model.width == 0.25 and config.data.image_size == 32
  assert run_results.read_results(stale).steps == 60
  recorded = manifest.read(root)
  assert recorded["sweep"] == "async" and recorded["kind"] == "recipe"
  assert {p["name"] for p in recorded["points"]} == {SYNC, STALE}
  assert recorded["code_version"] and recorded["code"]["shipped"] in ("HEAD",
                                                                       "working tree")
  # The user's settings after "--" are part of each point's recorded settings.
  (point,) = [p for p in recorded["points"] if p["name"] == STALE]
  assert point["full_config"]["num_train_steps"] == 60

  markdown = compare.compare(root)
  assert "| run | lr.staleness_scaling | staleness | steps |" in markdown
  assert f"| {STALE} | inverse | 2 | 60 |" in markdown
  for name in (compare.STALENESS_PLOT, compare.CURVES_PLOT):
    assert os.path.getsize(os.path.join(root, name)) > 1000


def _train_losses(workdir):
  return [(r["step"], r["loss"]) for r in metrics_file.read_rows(workdir, "train")]


def test_fake_cloud_spot_sweep_with_a_preemption(local_sweep, tmp_path,
                                                 shapes_tiny_dir):
  """Two Spot v5litepod-1 slices requested as queued resources; the slice training
  the second point is preempted after its first logged step; the launcher requests
  it again and the point resumes from its checkpoint. The VMs' python3 is 3.10: the
  environment step must find (mn-a) or fetch with uv (mn-b) a 3.11 and train with
  its venv."""
  python310 = fake_cloud.python310()
  if python310 is None:
    pytest.skip("no Python 3.10 on this machine to play the TPU VM's python3")
  root = str(tmp_path / "runs")
  cloud = fake_cloud.make(
      tmp_path, python310,
      preempt=[{"command_contains": f"--workdir={root}/{STALE}",
                "file": f"{root}/{STALE}/metrics.jsonl", "contains": '"split": "train"'}],
      worker_overrides={"mn-b-w-0": {"no_python311": True, "fake_uv": True}},
      worker_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  command = _launch_command(root, shapes_tiny_dir)
  command[command.index("--"):command.index("--")] = [
      "--tpu=mn-a,mn-b", "--zone=us-west4-a", "--create", "--accelerator=v5litepod-1",
      "--spot", "--shared_root", "--dirty=ship", f"--remote_jax=jax=={jax.__version__}",
      "--poll_seconds=5"]
  result = subprocess.run(command, cwd=training_runs.REPO, env=cloud.env,
                          capture_output=True, text=True, timeout=900)
  out = result.stdout + result.stderr
  assert result.returncode == 0, out[-5000:]
  assert "All 2 points of async have results" in out, out[-3000:]
  assert re.search(f"{STALE}: slice mn-[ab] was preempted", out), out[-3000:]
  assert len(re.findall(r": done on mn-[ab]", out)) == 2, out[-3000:]

  # The environment never used the system python3 beyond asking its version.
  probe = "-c import sys; sys.exit(sys.version_info < (3, 11))"
  assert all(line.endswith(probe) for line in cloud.python3_calls()), \
      cloud.python3_calls()
  assert any("uv python install 3.11" in l for l in cloud.uv_calls()), cloud.uv_calls()
  assert "Python 3.11" in out and "1 cpu devices" in out

  # Queued resources: requested with --spot, the preempted one again, all deleted.
  calls = cloud.calls()
  creates = [c for c in calls if c[2:4] == ["queued-resources", "create"]]
  assert len(creates) == 3 and all("--spot" in c for c in creates), creates
  assert cloud.state()["qrs"] == {} and cloud.state()["vms"] == {}

  # The preempted point resumed from its checkpoint, not from step 0.
  stale = os.path.join(root, STALE)
  logs = "".join(open(f).read() for f in glob.glob(os.path.join(stale, "train.*.log")))
  assert re.search(r"from step [1-9]", logs), logs[-3000:]
  assert [s for s, _ in _train_losses(stale)] == list(range(1, 61))
  # Identical to the runs made here, step by step and at the end.
  local_root = local_sweep[0]
  for name in (SYNC, STALE):
    ours = run_results.read_results(os.path.join(root, name))
    theirs = run_results.read_results(os.path.join(local_root, name))
    assert ours.final == theirs.final, name
    assert _train_losses(os.path.join(root, name)) == _train_losses(
        os.path.join(local_root, name)), name
  assert manifest.read(root)["create"] == {"accelerator": "v5litepod-1", "spot": True}
