"""Checkpointer: round trips, retention, corruption, config checks, device counts."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.rundir import checkpoint_store, readers
from mobilenet_jax.rundir import checkpointer as checkpointing
from tests import ckpt_helpers as h


def _save(workdir, cfg, state, **kwargs):
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    assert ckpt.save(state, **kwargs)


def test_round_trip_is_bit_identical(tmp_path):
  cfg = h.config(staleness=2)
  state = h.fake_state(cfg, step=10)
  ckpt = checkpointing.Checkpointer(str(tmp_path), cfg)
  assert ckpt.latest_step() is None
  initial = h.fake_state(cfg, step=0, value=3.0)
  assert ckpt.restore_or_initial(initial) is initial
  assert ckpt.save(state, metrics={"eval_top1": np.float32(0.5)})  # Async.
  ckpt.wait()
  assert ckpt.latest_step() == 10
  ckpt.close()

  restored = checkpointing.Checkpointer(str(tmp_path), cfg).restore_or_initial(initial)
  h.assert_trees_equal(restored, state)
  assert readers.read_config(str(tmp_path)).to_dict() == json.loads(
      cfg.to_json_best_effort())


def test_saves_only_save_steps_and_never_overwrites(tmp_path):
  cfg = h.config(checkpoint_every_steps=10)
  with checkpointing.Checkpointer(str(tmp_path), cfg) as ckpt:
    assert not ckpt.save(h.fake_state(cfg, step=7))
    assert ckpt.save(h.fake_state(cfg, step=7), force=True)
    assert ckpt.save(h.fake_state(cfg, step=10))
    ckpt.wait()
    assert not ckpt.save(h.fake_state(cfg, step=10, value=1.0), force=True)
    assert ckpt.all_steps() == [7, 10]
  restored = checkpointing.Checkpointer(str(tmp_path), cfg).restore_or_initial(
      h.fake_state(cfg, value=2.0))
  h.assert_trees_equal(restored, h.fake_state(cfg, step=10))


def test_keeps_last_k_plus_best(tmp_path):
  cfg = h.config(keep_checkpoints=2, keep_best_checkpoint=True)
  top1 = {10: 0.5, 20: 0.9, 30: 0.1, 40: 0.2, 50: 0.3}
  with checkpointing.Checkpointer(str(tmp_path), cfg) as ckpt:
    for step, acc in top1.items():
      ckpt.save(h.fake_state(cfg, step=step), metrics={"eval_top1": acc, "loss": 1.0})
    ckpt.wait()
    assert ckpt.all_steps() == [20, 40, 50]
    assert ckpt.best_step() == 20
  # Metrics are read back from disk: the best survives a restart.
  with checkpointing.Checkpointer(str(tmp_path), cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=60), metrics={"eval_top1": 0.4})
    ckpt.save(h.fake_state(cfg, step=70))  # No metrics: kept only as a latest.
    ckpt.wait()
    assert ckpt.all_steps() == [20, 60, 70]
  cfg.keep_best_checkpoint = False
  with checkpointing.Checkpointer(str(tmp_path), cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=80))
    ckpt.wait()
    assert ckpt.all_steps() == [70, 80]


@pytest.fixture(name="saved")
def _saved(tmp_path):
  cfg = h.config()
  _save(str(tmp_path), cfg, h.fake_state(cfg, step=10, size=4096))
  return str(tmp_path), cfg


def test_missing_step(saved):
  workdir, cfg = saved
  with pytest.raises(CheckpointError, match=r"step 5 .*available steps: 10"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(h.fake_state(cfg, size=4096), 5)
  with pytest.raises(CheckpointError, match="No checkpoint"):
    readers.read_config(workdir + "/elsewhere")


def test_truncated_array_file(saved):
  workdir, cfg = saved
  data = max(glob.glob(f"{workdir}/checkpoints/10/state/**/d/*", recursive=True),
             key=os.path.getsize)
  os.truncate(data, os.path.getsize(data) // 2)
  with pytest.raises(CheckpointError, match=f"{workdir}/checkpoints/10/state"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(h.fake_state(cfg, size=4096))


def test_garbled_metadata(saved):
  workdir, cfg = saved
  path = f"{workdir}/checkpoints/10/meta/metadata"
  with open(path, "w") as f:
    f.write('{"format_version": 1, "conf')
  with pytest.raises(CheckpointError, match=f"{path}.*corrupt"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(h.fake_state(cfg, size=4096))


def test_other_format_version(saved):
  workdir, cfg = saved
  path = f"{workdir}/checkpoints/10/meta/metadata"
  with open(path) as f:
    meta = json.load(f)
  with open(path, "w") as f:
    json.dump(dict(meta, format_version=99), f)
  with pytest.raises(CheckpointError, match="format version 99"):
    readers.read_config(workdir)


def test_check_config_runs_before_restoring(saved):
  workdir, cfg = saved
  seen = []

  def refuse(stored, path):
    seen.append((stored["model"]["width"], path))
    raise CheckpointError("refused")

  with pytest.raises(CheckpointError, match="refused"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(
        h.fake_state(cfg, size=4096), check_config=refuse)
  assert seen == [(cfg.model.width, f"{workdir}/checkpoints/10")]


def test_state_mismatch_names_arrays(saved):
  workdir, cfg = saved
  # Same config, another state (as a trainer that wraps its optimizer differently).
  with pytest.raises(CheckpointError, match=r"params/conv0/conv/kernel: shape "
                     r"\(4096,\) \(checkpoint\) vs \(64,\) \(now\)"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(h.fake_state(cfg))


def test_restore_weights_reads_only_those(saved):
  workdir, cfg = saved
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  trees, step, stored = readers.restore_weights(workdir, sharding)
  assert step == 10 and stored.model.width == cfg.model.width
  assert set(trees) == set(checkpoint_store.WEIGHT_FIELDS)
  h.assert_trees_equal(trees["params"], h.fake_state(cfg, step=10, size=4096).params)


_WRITE_ON_8 = """
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from mobilenet_jax.rundir import checkpoint_store, readers
from mobilenet_jax.rundir import checkpointer as checkpointing
from tests import ckpt_helpers as h
assert jax.device_count() == 8
cfg = h.config(staleness=2)
replicated = NamedSharding(Mesh(jax.devices(), ("data",)), PartitionSpec())
place = lambda s: jax.device_put(s, replicated)
# Restore what one device wrote, onto 8 ...
ckpt = checkpointing.Checkpointer({one!r}, cfg)
restored = ckpt.restore_or_initial(place(h.fake_state(cfg, value=0.0)))
h.assert_trees_equal(restored, h.fake_state(cfg, step=10))
assert restored.params["classifier"]["kernel"].sharding == replicated
# ... and write from 8.
state = place(h.fake_state(cfg, step=20))
assert len(state.params["classifier"]["kernel"].sharding.device_set) == 8
with checkpointing.Checkpointer({eight!r}, cfg) as ckpt:
  assert ckpt.save(state)
print("ok")
"""


def test_restore_across_device_counts(tmp_path):
  cfg = h.config(staleness=2)
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  _save(one, cfg, h.fake_state(cfg, step=10))
  result = h.run_python(_WRITE_ON_8.format(one=one, eight=eight), devices=8)
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
  restored = checkpointing.Checkpointer(eight, cfg).restore_or_initial(
      h.fake_state(cfg, value=0.0))
  h.assert_trees_equal(restored, h.fake_state(cfg, step=20))
  assert restored.params["classifier"]["kernel"].sharding.device_set == {
      jax.devices()[0]}


def _truncate_array(step_dir):
  for data in glob.glob(f"{step_dir}/state/**/d/*", recursive=True):
    os.truncate(data, os.path.getsize(data) // 2)


def _garble_meta(step_dir):
  with open(f"{step_dir}/meta/metadata", "w") as f:
    f.write('{"format_version": 1, "conf')


def _remove_state_metadata(step_dir):
  os.remove(f"{step_dir}/state/_METADATA")


def _tree_digest(path):
  return {os.path.relpath(f, path): open(f, "rb").read()
          for f in glob.glob(f"{path}/**/*", recursive=True) if os.path.isfile(f)}


@pytest.mark.parametrize("corrupt", [_truncate_array, _garble_meta,
                                     _remove_state_metadata])
def test_corrupt_latest_falls_back_and_is_kept(tmp_path, caplog, corrupt):
  workdir = str(tmp_path)
  cfg = h.config(keep_checkpoints=1, keep_best_checkpoint=False)
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=10, size=4096), force=True)
    ckpt.wait()
    ckpt.save(h.fake_state(cfg, step=20, size=4096, value=1.0), force=True)
  # keep_checkpoints=1 deleted step 10; keep two good steps for the test.
  cfg.keep_checkpoints = 2
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=30, size=4096), force=True)
  corrupt(f"{workdir}/checkpoints/30")
  damaged = _tree_digest(f"{workdir}/checkpoints/30")

  with caplog.at_level("WARNING"):
    ckpt = checkpointing.Checkpointer(workdir, cfg)
    restored = ckpt.restore_or_initial(h.fake_state(cfg, size=4096, value=5.0))
  h.assert_trees_equal(restored, h.fake_state(cfg, step=20, size=4096, value=1.0))
  message = " ".join(r.getMessage() for r in caplog.records)
  assert "step 30 is unusable" in message and "resumes from step 20" in message
  assert f"{workdir}/checkpoints/corrupt-30" in message
  assert ckpt.all_steps() == [20]
  # The resumed run saves step 30 again and goes on; the retention policy (2 steps)
  # deletes old steps, never the corrupt copy, which stays byte for byte.
  for step in (30, 40, 50):
    ckpt.save(h.fake_state(cfg, step=step, size=4096), force=True)
  ckpt.close()
  assert checkpointing.Checkpointer(workdir, cfg).all_steps() == [40, 50]
  assert _tree_digest(f"{workdir}/checkpoints/corrupt-30") == damaged


def test_every_checkpoint_corrupt_stops_and_moves_nothing(saved):
  workdir, cfg = saved
  _truncate_array(f"{workdir}/checkpoints/10")
  before = _tree_digest(f"{workdir}/checkpoints")
  with pytest.raises(CheckpointError, match="No usable checkpoint.*checkpoints/10/state"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(
        h.fake_state(cfg, size=4096))
  assert _tree_digest(f"{workdir}/checkpoints") == before


def test_explicit_step_never_falls_back(saved):
  workdir, cfg = saved
  _garble_meta(f"{workdir}/checkpoints/10")
  with pytest.raises(checkpoint_store.CorruptCheckpointError, match="10/meta/metadata"):
    checkpointing.Checkpointer(workdir, cfg).restore_or_initial(
        h.fake_state(cfg, size=4096), step=10)
