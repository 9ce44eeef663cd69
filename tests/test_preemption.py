"""SIGKILL in the middle of a checkpoint write, and SIGTERM via PreemptionGuard."""

import os
import signal
import subprocess
import sys
import time

from mobilenet_jax.train import checkpointing
from tests import ckpt_helpers as h

# Saves a ~50 MB state at every step, each filled with its step number.
_SAVE_FOREVER = """
import sys
from mobilenet_jax.train import checkpointing
from tests import ckpt_helpers as h
cfg = h.config(checkpoint_every_steps=1, keep_checkpoints=2)
ckpt = checkpointing.Checkpointer(sys.argv[1], cfg)
for step in range(1, 1000):
  ckpt.save(h.fake_state(cfg, step=step, size=3_000_000, value=float(step)))
"""


def _tmp_dirs(directory):
  return [n for n in os.listdir(directory) if "tmp" in n] if os.path.isdir(
      directory) else []


def test_sigkill_during_write_leaves_a_usable_directory(tmp_path):
  workdir = str(tmp_path)
  directory = checkpointing.checkpoint_dir(workdir)
  env = dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, workdir], env=env,
                           cwd=h.REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 90
    # Wait until one step is committed and the next one is being written.
    while time.time() < deadline and child.poll() is None:
      committed = [n for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(
          directory) else []
      if committed and _tmp_dirs(directory):
        break
      time.sleep(0.01)
    assert child.poll() is None, child.stderr.read()[-3000:]
    child.send_signal(signal.SIGKILL)
  finally:
    child.kill()
    child.wait()
  # Usually the interrupted step's temporary directory is still there.
  print("left behind:", _tmp_dirs(directory))
  cfg = h.config(checkpoint_every_steps=1, keep_checkpoints=2)
  ckpt = checkpointing.Checkpointer(workdir, cfg)
  last = ckpt.latest_step()
  assert last is not None
  initial = h.fake_state(cfg, size=3_000_000, value=0.0)
  h.assert_trees_equal(ckpt.restore_or_initial(initial),
                       h.fake_state(cfg, step=last, size=3_000_000, value=float(last)))
  # Saving the step that was interrupted (and the next) works; no leftovers remain.
  for step in (last + 1, last + 2):
    assert ckpt.save(h.fake_state(cfg, step=step, size=3_000_000, value=float(step)))
  ckpt.close()
  assert not _tmp_dirs(directory)
  assert checkpointing.Checkpointer(workdir, cfg).latest_step() == last + 2


# A trainer-like loop: steps until SIGTERM, then saves, waits and returns normally.
_LOOP = """
import signal, sys, time
from mobilenet_jax.train import checkpointing, preemption
from tests import ckpt_helpers as h
previous = signal.getsignal(signal.SIGTERM)
cfg = h.config(checkpoint_every_steps=1000)
ckpt = checkpointing.Checkpointer(sys.argv[1], cfg)
with preemption.PreemptionGuard() as guard:
  assert guard.active and not guard.requested
  print("ready", flush=True)
  for step in range(1, 100_000):
    time.sleep(0.001)
    if guard.should_stop():
      ckpt.save(h.fake_state(cfg, step=step), force=True)
      ckpt.wait()
      print(f"preempted at step {step}", flush=True)
      break
assert guard.signal_received == signal.SIGTERM
assert signal.getsignal(signal.SIGTERM) is previous
ckpt.close()
"""


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  env = dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", _LOOP, str(tmp_path)], env=env,
                           cwd=h.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  assert child.stdout.readline().strip() == "ready"
  child.send_signal(signal.SIGTERM)
  out, err = child.communicate(timeout=60)
  assert child.returncode == 0, err[-3000:]
  step = int(out.split("preempted at step ")[1])
  assert checkpointing.Checkpointer(str(tmp_path), h.config()).latest_step() == step


def test_guard_restores_previous_handler():
  from mobilenet_jax.train import preemption  # pylint: disable=g-import-not-at-top
  calls = []
  previous = signal.signal(signal.SIGUSR1, lambda *a: calls.append("outer"))
  try:
    with preemption.PreemptionGuard(signals=(signal.SIGUSR1,)) as guard:
      os.kill(os.getpid(), signal.SIGUSR1)
      time.sleep(0.01)
      assert guard.requested and not calls
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.01)
    assert calls == ["outer"]
  finally:
    signal.signal(signal.SIGUSR1, previous)
