"""run_dir: the results schema, a real run read back through it, identity, restores."""

import json
import shutil

import jax
import pytest

from mobilenet_jax.rundir import checkpoint_store, layout, metrics_file, readers
from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import results as run_results
from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.train import batchnorm
from tests import ckpt_helpers as h


@pytest.fixture(scope="module", name="tiny_run")
def _tiny_run(tmp_path_factory, shapes_tiny_dir):
  """A real 2-step training run of MobileNet V1 0.25 at 32x32 on shapes10/tiny."""
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  cfg = h.config(**{"data.name": "shapes10/tiny", "data.data_dir": shapes_tiny_dir,
                    "num_train_steps": 2, "log_every_steps": 1,
                    "checkpoint_every_steps": 1, "lr.staleness_scaling": "inverse"})
  workdir = str(tmp_path_factory.mktemp("run") / "v1")
  returned = trainer.train_and_evaluate(cfg, workdir)
  return workdir, cfg, returned


def test_real_run_reads_back(tiny_run):
  workdir, cfg, returned = tiny_run
  assert run_results.is_finished(workdir)
  results = run_results.read_results(workdir)
  assert results.to_json() == returned  # What the trainer returned is what it wrote.
  assert results.schema_version == run_results.SCHEMA_VERSION
  assert results.steps == 2 and results.device_count == 1
  assert set(results.final) == {"raw", "ema"}
  assert results.final["raw"].num_examples == 70
  top1, source = results.top1
  assert source == "EMA" and top1 == results.final["ema"].top1
  assert 0 < results.params < results.trainable_params and results.mult_adds > 0
  # The stored config is the full config, recipe included, with the BatchNorm
  # momentum the trainer chose for an unset one (train/batchnorm.py).
  stored = readers.read_config(workdir)
  assert cfg.model.bn_momentum is None
  assert stored.model.bn_momentum == batchnorm.auto_momentum(cfg.model.name, 2)
  expected = {**run_identity.identity(cfg), "model.bn_momentum": stored.model.bn_momentum}
  assert run_identity.identity(stored) == expected
  assert readers.read_config(workdir, step=1).lr.staleness_scaling == "inverse"
  assert [r["step"] for r in metrics_file.read_rows(workdir, "train")] == [1, 2]
  assert metrics_file.read_rows(workdir, "eval")[-1]["top1"] == results.final["raw"].top1


def test_rerunning_a_finished_run_keeps_its_training_figures(tiny_run, tmp_path):
  # A second launch of a finished point evaluates it again and trains nothing: the
  # results keep the training's wall time and images/s, not the re-evaluation's.
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  workdir, cfg, returned = tiny_run
  copy = tmp_path / "v1"
  shutil.copytree(workdir, copy)
  again = trainer.train_and_evaluate(cfg, str(copy))
  for key in ("wall_time_s", "train_images_per_sec", "input_bound", "final", "steps"):
    assert again[key] == returned[key], key
  assert run_results.read_results(copy).to_json() == again


def test_restore_weights_reads_only_weights(tiny_run):
  workdir, cfg, _ = tiny_run
  weights, step, config = readers.restore_weights(workdir, h.EVERYWHERE, step=1)
  assert step == 1 and set(weights) == set(checkpoint_store.WEIGHT_FIELDS)
  assert config.model.width == cfg.model.width
  leaf = jax.tree.leaves(weights["params"])[0]
  assert leaf.sharding.device_set == set(jax.devices())


def test_schema_errors(tmp_path):
  with pytest.raises(run_results.ResultsError, match="has not finished"):
    run_results.read_results(tmp_path)
  path = tmp_path / layout.RESULTS_FILE
  path.write_text('{"preempted_at_step": 3}')
  with pytest.raises(run_results.ResultsError, match="not a finished run's results: no config"):
    run_results.read_results(tmp_path)
  path.write_text('{"conf')
  with pytest.raises(run_results.ResultsError, match="not valid JSON"):
    run_results.read_results(tmp_path)
  path.write_text(json.dumps({"schema_version": 7}))
  with pytest.raises(run_results.ResultsError, match="schema version 7"):
    run_results.read_results(tmp_path)


def test_identity_and_differing_keys():
  a = h.config()
  b = h.config(**{"staleness": 4, "model.depthwise_impl": "xla",
                  "log_every_steps": 1, "lr.staleness_scaling": "inverse"})
  # Kernel choices and logging cadence are not part of what a run computes.
  assert run_identity.differing_keys([a, b]) == ["lr.staleness_scaling", "staleness"]
  assert run_identity.differing_keys([a, h.config()]) == []
  assert run_identity.architecture_name(h.config(**{"model.depth": "shallow"})) == (
      "v1_w0.25_r32_shallow")


def test_config_mismatch_names_keys(tmp_path):
  cfg = h.config()
  workdir = str(tmp_path)
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    ckpt.save(h.fake_state(cfg, step=10), force=True)
  other = h.config(staleness=1, **{"model.width": 0.5, "optimizer.name": "sgd"})
  with pytest.raises(CheckpointError) as error:
    checkpointing.Checkpointer(workdir, other).restore_or_initial(
        h.fake_state(other), check_config=run_identity.check_compatible(other))
  message = str(error.value)
  assert f"{workdir}/checkpoints/10" in message
  assert "model.width: 0.25 (checkpoint) vs 0.5 (now)" in message
  assert "staleness: 0 (checkpoint) vs 1 (now)" in message
  assert "optimizer.name: 'rmsprop_tf' (checkpoint) vs 'sgd' (now)" in message
  # Non-structural changes (learning rate, implementation choices) are fine.
  same = h.config(**{"lr.base": 1.0, "model.depthwise_impl": "xla"})
  checkpointing.Checkpointer(workdir, same).restore_or_initial(
      h.fake_state(same), check_config=run_identity.check_compatible(same))
