"""SIGKILL in the middle of a checkpoint write, and SIGTERM via PreemptionGuard."""

import os
import socket
import signal
import subprocess
import sys
import time

from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.rundir import layout
from tests import ckpt_helpers as h

# Saves a ~50 MB state at every step, each filled with its step number.
_SAVE_FOREVER = """
import sys
from mobilenet_jax.rundir import checkpointer as checkpointing
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
  directory = layout.checkpoint_dir(workdir)
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
from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.train import preemption
from tests import ckpt_helpers as h
previous = signal.getsignal(signal.SIGTERM)
cfg = h.config(checkpoint_every_steps=1000)
ckpt = checkpointing.Checkpointer(sys.argv[1], cfg)
with preemption.PreemptionGuard() as guard:
  assert guard.active and not guard.requested
  print("ready", flush=True)
  for step in range(1, 100_000):
    time.sleep(0.001)
    if guard.should_stop(step):
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


# Two processes of one jax.distributed run; SIGTERM reaches only process 1. Prints the
# step at which the guard stopped and how many all-gathers the loop made.
_MULTIHOST_LOOP = """
import sys, time
import jax
jax.config.update("jax_enable_preemption_service", sys.argv[3] == "service")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jax.experimental import multihost_utils
from mobilenet_jax.train import preemption
gathers = []
real_allgather = multihost_utils.process_allgather
multihost_utils.process_allgather = lambda x, **k: gathers.append(1) or real_allgather(x, **k)
with preemption.PreemptionGuard(sync_every_steps=20) as guard:
  print("ready", flush=True)
  for step in range(1, 100_000):
    time.sleep(0.005)
    if guard.should_stop(step):
      print(f"stopped {step} {len(gathers)}", flush=True)
      break
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_hosts(mode: str) -> list[tuple[int, int]]:
  """(stop step, all-gathers) of both processes after SIGTERM to process 1."""
  env = dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu")
  address = f"127.0.0.1:{_free_port()}"
  children = [subprocess.Popen([sys.executable, "-c", _MULTIHOST_LOOP, address, str(i),
                                mode], env=env, cwd=h.REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    for child in children:  # Gloo's connection line may come first.
      lines = iter(child.stdout.readline, "")
      assert "ready" in (line.strip() for line in lines), child.stderr.read()[-3000:]
    time.sleep(0.5)
    children[1].send_signal(signal.SIGTERM)
    outputs = [child.communicate(timeout=60) for child in children]
  finally:
    for child in children:
      child.kill()
      child.wait()
  results = []
  for child, (out, err) in zip(children, outputs):
    assert child.returncode == 0, err[-3000:]
    _, step, gathers = out.split()[-3:]  # The last line.
    results.append((int(step), int(gathers)))
  return results


def test_multihost_stops_together_without_a_per_step_collective():
  # JAX's preemption service spreads the notice: no all-gather in the loop at all.
  (step0, gathers0), (step1, gathers1) = _run_two_hosts("service")
  assert step0 == step1 and step0 > 1
  assert gathers0 == gathers1 == 0


def test_multihost_fallback_agrees_every_n_steps():
  # Without the service: one all-gather on entry (it connects the collectives before a
  # signal can interrupt their handshake), then one per 20 steps; both hosts stop at the
  # same one.
  (step0, gathers0), (step1, gathers1) = _run_two_hosts("allgather")
  assert step0 == step1 and step0 % 20 == 0
  assert gathers0 == gathers1 == step0 // 20 + 1
