"""Faults an operator meets: one writer per run, torn files, non-finite states, disks
that fill, steps that vanish under a reader. In-process, on tiny states (the
trainings that need a whole process are in test_faults_end_to_end.py)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from mobilenet_jax.errors import CheckpointError, ConfigError, TrainingDivergedError
from mobilenet_jax.rundir import checkpoint_store, layout, lock, metrics_file, readers
from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.rundir import results as run_results
from tests import ckpt_helpers as h


# ---------------------------------------------------------------- one writer

def test_second_writer_is_refused_naming_the_holder(tmp_path):
  with lock.RunLock(tmp_path):
    with pytest.raises(lock.RunLockedError) as error:
      lock.RunLock(tmp_path).acquire()
    assert f"PID {os.getpid()}" in lock.live_holder(tmp_path)  # A launcher's probe.
  assert lock.live_holder(tmp_path) is None
  message = str(error.value)
  assert f"trainer PID {os.getpid()}" in message and "in use by another run" in message
  with lock.RunLock(tmp_path):  # Released: taken again without a note.
    pass


def test_lock_of_a_dead_holder_is_taken_over_with_a_note(tmp_path, caplog):
  code = ("import os, sys; from mobilenet_jax.rundir import lock; "
          "l = lock.RunLock(sys.argv[1]).acquire(); print(os.getpid(), flush=True); "
          "os._exit(9)")  # Dies holding it: no release.
  proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=h.REPO,
                        env=dict(os.environ, PYTHONPATH=h.REPO), capture_output=True,
                        text=True, timeout=60, check=False)
  dead_pid = proc.stdout.strip()
  assert proc.returncode == 9 and dead_pid, proc.stderr
  assert lock.live_holder(tmp_path) is None  # Its note remains; its PID is gone.
  with caplog.at_level(logging.WARNING), lock.RunLock(tmp_path):
    assert json.loads(layout.lock_path(tmp_path).read_text())["pid"] == os.getpid()
  assert f"PID {dead_pid}" in caplog.text and "no longer running" in caplog.text


def test_a_holder_pid_given_to_a_later_process_is_not_live(tmp_path):
  # A note from before this process started, naming this process's PID: the PID was
  # reused since, so the note's writer is gone.
  note = {"host": socket.gethostname(), "pid": os.getpid(), "role": "trainer"}
  layout.lock_path(tmp_path).write_text(json.dumps(
      {**note, "started": "2020-01-01T00:00:00+00:00"}))
  assert lock.live_holder(tmp_path) is None
  layout.lock_path(tmp_path).write_text(json.dumps(
      {**note, "started": datetime.datetime.now().astimezone().isoformat()}))
  assert f"trainer PID {os.getpid()} " in lock.live_holder(tmp_path)


def test_a_launcher_hands_its_lock_to_the_trainer_it_starts(tmp_path):
  # The child adopts the handed fd (its note names it) where a plain acquire would be
  # refused; whatever it leaves held when it dies, the launcher gives back.
  code = ("import os, sys; from mobilenet_jax.rundir import lock; "
          "lock.RunLock(sys.argv[1]).acquire(); print(os.getpid(), flush=True); "
          "sys.stdin.readline(); os._exit(9)")  # Dies holding it: no release.
  with lock.held_for_child(tmp_path) as (env, fds):
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=h.REPO,
                             env=dict(os.environ, PYTHONPATH=h.REPO, **env),
                             pass_fds=fds, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    child_pid = child.stdout.readline().strip()
    assert child_pid and f"PID {child_pid} " in lock.live_holder(tmp_path)
    with pytest.raises(lock.RunLockedError, match=f"PID {child_pid} "):
      lock.RunLock(tmp_path).acquire()
    child.communicate("\n", timeout=60)
    assert child.returncode == 9
  assert layout.lock_path(tmp_path).read_text() == ""
  with lock.RunLock(tmp_path):  # Free, and taken without a takeover note.
    pass


@pytest.fixture
def leased(tmp_path, monkeypatch):
  """tmp_path taken for object storage (gs://): its lock is a lease, not a flock."""
  monkeypatch.setattr(lock, "_on_object_storage", lambda workdir: True)
  return tmp_path


def _ago(seconds: float) -> str:
  return (datetime.datetime.now().astimezone()
          - datetime.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def test_object_storage_lock_lapses_when_its_holder_stops_renewing(leased, caplog):
  path = layout.lock_path(leased)
  with lock.RunLock(leased):
    with pytest.raises(lock.RunLockedError) as error:
      lock.RunLock(leased).acquire()
  assert not path.exists()  # Released: no file, no holder.
  message = str(error.value)
  assert f"trainer PID {os.getpid()}" in message and "its lock lapses at" in message
  assert f"run started then takes it over; or delete {path} and run again." in message
  # A trainer on a preempted TPU VM never released it: renewed just inside the lease,
  # it still holds; just outside, it is taken over with a note.
  lost = {"host": "t1v-n-lost-w-0", "pid": 4242, "role": "trainer", "started": _ago(7200)}
  path.write_text(json.dumps({**lost, "renewed": _ago(lock.LEASE_S - 30)}))
  with pytest.raises(lock.RunLockedError, match="PID 4242 on t1v-n-lost-w-0"):
    lock.RunLock(leased).acquire()
  path.write_text(json.dumps({**lost, "renewed": _ago(lock.LEASE_S + 30)}))
  with caplog.at_level(logging.WARNING), lock.RunLock(leased):
    assert json.loads(path.read_text())["pid"] == os.getpid()
  assert "PID 4242 on t1v-n-lost-w-0" in caplog.text and "lease lapsed" in caplog.text
  assert not path.exists()
  path.write_text("{torn")  # A note it cannot read: never taken over unasked.
  with pytest.raises(lock.RunLockedError, match="an unknown process.*gone, delete"):
    lock.RunLock(leased).acquire()


def test_object_storage_holder_renews_and_leaves_a_successor_its_lock(
    leased, monkeypatch, caplog):
  path = layout.lock_path(leased)
  monkeypatch.setattr(lock, "RENEW_S", 0.05)
  held = lock.RunLock(leased).acquire()
  started = json.loads(path.read_text())["started"]
  deadline = time.time() + 30
  while "renewed" not in held._note and time.time() < deadline:
    time.sleep(0.02)
  monkeypatch.setattr(lock, "RENEW_S", 3600)  # The renewing thread now sleeps.
  time.sleep(0.3)
  note = json.loads(path.read_text())
  assert note["pid"] == os.getpid() and note["started"] == started and "renewed" in note
  # The launcher cleared it (its slice looked lost) and another trainer took it: this
  # holder stops renewing, says so, and its release leaves the successor's note.
  assert lock.clear_lost_holder(leased) == f"trainer PID {os.getpid()} on " \
      f"{socket.gethostname()}, started {started}"
  successor = json.dumps({"host": "t1v-n-next-w-0", "pid": 7, "role": "trainer",
                          "started": _ago(0)})
  path.write_text(successor)
  with caplog.at_level(logging.ERROR):
    assert not held._renew_once()
  assert "no longer this process's (it names trainer PID 7 on t1v-n-next-w-0" \
      in caplog.text
  held.release()
  assert path.read_text() == successor
  assert lock.clear_lost_holder(leased / "never_trained") is None


def test_clearing_a_lost_holder_leaves_a_local_lock_to_the_kernel(tmp_path):
  with lock.RunLock(tmp_path):
    assert lock.clear_lost_holder(tmp_path) is None
    with pytest.raises(lock.RunLockedError):
      lock.RunLock(tmp_path).acquire()


def test_unwritable_workdir_is_one_config_error():
  # /sys refuses new directories even to root, as a read-only mount would.
  with pytest.raises(ConfigError, match="cannot write the run directory"):
    lock.RunLock("/sys/mobilenet_jax_run").acquire()


# ---------------------------------------------------------------- torn files

def test_torn_metrics_tail_is_dropped_and_the_rows_before_kept(tmp_path, caplog):
  rows = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (1, 2, 3)]
  for row in rows:
    metrics_file.append_row(tmp_path, row)
  with layout.metrics_path(tmp_path).open("a") as f:
    f.write('{"step": 4, "split": "tra')  # A kill in the middle of a write.
  with caplog.at_level(logging.WARNING):
    assert metrics_file.read_rows(tmp_path) == rows
  assert "torn last line 4" in caplog.text
  metrics_file.keep_through(tmp_path, 2)  # What a resume from step 2 does.
  assert metrics_file.read_rows(tmp_path) == rows[:2]
  metrics_file.append_row(tmp_path, rows[2])
  assert metrics_file.read_rows(tmp_path) == rows


def test_damaged_metrics_row_before_the_end_names_the_line(tmp_path):
  path = layout.metrics_path(tmp_path)
  path.write_text('{"step": 1, "split": "train"}\nGARBAGE\n{"step": 3, "split": "x"}\n')
  with pytest.raises(metrics_file.MetricsFileError, match="line 2 is not a metrics row"):
    metrics_file.read_rows(tmp_path)


def test_truncated_results_is_unfinished_not_a_crash(tmp_path):
  assert not run_results.is_finished(tmp_path)
  layout.results_path(tmp_path).write_text('{"config": {"model": {"na')
  assert not run_results.is_finished(tmp_path)
  with pytest.raises(run_results.ResultsError, match="truncated"):
    run_results.read_results(tmp_path)


# ---------------------------------------------------------------- non-finite states

def _poisoned(state):
  """`state` with one parameter array and one BatchNorm statistic made inf/NaN."""
  params = dict(state.params, classifier={**state.params["classifier"],
                                          "bias": state.params["classifier"]["bias"] + jnp.inf})
  stats = jax.tree.map(lambda x: x * jnp.nan, state.batch_stats)
  return state.replace(params=params, batch_stats=stats)


def test_non_finite_state_is_never_saved(tmp_path):
  cfg = h.config()
  with checkpointing.Checkpointer(tmp_path, cfg) as ckpt:
    assert ckpt.save(h.fake_state(cfg, step=10), force=True)
    ckpt.wait()
    with pytest.raises(TrainingDivergedError) as error:
      ckpt.save(_poisoned(h.fake_state(cfg, step=20)), force=True)
  message = str(error.value)
  assert "by step 20" in message and "last checkpoint: step 10" in message
  assert "params: 1 of" in message and "batch_stats: 2 of 2 arrays" in message
  assert layout.step_dirs(tmp_path) == [10]


def test_resume_skips_a_non_finite_checkpoint_like_a_corrupt_one(tmp_path, monkeypatch):
  cfg = h.config()
  with checkpointing.Checkpointer(tmp_path, cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=10, value=1.0), force=True)
  # A checkpoint written by code that did not check (an older version of this one).
  monkeypatch.setattr(checkpoint_store, "non_finite_report", lambda state: "")
  with checkpointing.Checkpointer(tmp_path, cfg) as ckpt:
    ckpt.save(_poisoned(h.fake_state(cfg, step=20, value=1.0)), force=True)
  monkeypatch.undo()
  restored = checkpointing.Checkpointer(tmp_path, cfg).restore_or_initial(
      h.fake_state(cfg, value=5.0))
  h.assert_trees_equal(restored, h.fake_state(cfg, step=10, value=1.0))
  assert layout.step_dirs(tmp_path) == [10]
  assert os.path.isdir(layout.corrupt_step_path(tmp_path, 20))


# ---------------------------------------------------------------- full disk

@pytest.fixture(name="tiny_disk")
def _tiny_disk(tmp_path):
  """A 2 MiB tmpfs, or a skip where this machine cannot mount one."""
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                        capture_output=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
  yield str(mount)
  subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_during_a_save_is_one_line_and_earlier_steps_survive(tiny_disk):
  cfg = h.config()
  ckpt = checkpointing.Checkpointer(tiny_disk, cfg)
  assert ckpt.save(h.fake_state(cfg, step=10, size=1000), force=True)
  ckpt.wait()
  with pytest.raises(CheckpointError) as error:
    ckpt.save(h.fake_state(cfg, step=20, size=600_000), force=True)
    ckpt.wait()
  message = str(error.value)
  assert "\n" not in message and "could not write step 20" in message
  assert "No space left on device" in message and "up to step 10 are intact" in message
  ckpt.close()
  restored = checkpointing.Checkpointer(tiny_disk, cfg).restore_or_initial(
      h.fake_state(cfg, size=1000))
  assert int(restored.step) == 10


# ---------------------------------------------------------------- readers

def test_reader_moves_past_a_step_deleted_while_it_reads(tmp_path, monkeypatch):
  cfg = h.config(keep_checkpoints=1)
  with checkpointing.Checkpointer(tmp_path, cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=20, value=2.0), force=True)
  original = checkpoint_store.restore_state

  def writer_replaces_the_step(mngr, step, target, partial=False):
    if step == 20:  # The trainer saves step 30 and deletes 20 (keep_checkpoints=1).
      with checkpointing.Checkpointer(tmp_path, cfg) as writer:
        writer.save(h.fake_state(cfg, step=30, value=3.0), force=True)
      raise checkpoint_store.CorruptCheckpointError("could not be restored: gone")
    return original(mngr, step, target, partial)

  monkeypatch.setattr(checkpoint_store, "restore_state", writer_replaces_the_step)
  weights, step, _ = readers.restore_weights(tmp_path, h.EVERYWHERE)
  assert step == 30
  h.assert_trees_equal(weights["params"], h.fake_state(cfg, step=30, value=3.0).params)


# ---------------------------------------------------------------- out of memory

def test_out_of_memory_names_the_batch_to_lower():
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  cfg = h.config(global_batch_size=4096)
  with pytest.raises(ConfigError, match=r"out of memory .*global_batch_size=4096.*"
                     r"--config.global_batch_size=2048"):
    with trainer._out_of_memory_named(cfg):  # pylint: disable=protected-access
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating "
                                       "123456789 bytes.")
  with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
    with trainer._out_of_memory_named(cfg):  # pylint: disable=protected-access
      raise jax.errors.JaxRuntimeError("INTERNAL: something else")


# ---------------------------------------------------------------- silent acceptance

def test_evaluate_refuses_a_dataset_with_another_class_count(trained_tiny_run,
                                                              monkeypatch):
  from mobilenet_jax import data, evaluate  # pylint: disable=g-import-not-at-top
  workdir, _ = trained_tiny_run
  real = data.get_dataset_info

  def five_classes(data_config):
    return real(data_config).__class__(**{**vars(real(data_config)), "num_classes": 5})

  monkeypatch.setattr(data, "get_dataset_info", five_classes)
  with pytest.raises(ConfigError, match="has 5 classes, the model of .* 10"):
    evaluate.run(workdir, data_dir="/elsewhere")
