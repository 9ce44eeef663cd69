"""evaluate, predict and load on checkpoints: from 8 devices, and from a real run."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import mobilenet_jax
from mobilenet_jax import evaluate
from mobilenet_jax import predict
from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.errors import ConfigError
from tests import ckpt_helpers as h

# Writes a step-10 checkpoint of MobileNetV1(0.25) replicated over 8 devices.
_WRITE_ON_8 = """
import sys, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from mobilenet_jax.rundir import checkpointer as checkpointing
from tests import ckpt_helpers as h
workdir, data_dir = sys.argv[1:]
cfg = h.config(**{"data.name": "shapes10/tiny", "data.data_dir": data_dir})
state = h.model_state(cfg).replace(step=np.int32(10))
state = jax.device_put(state, NamedSharding(Mesh(jax.devices(), ("d",)), PartitionSpec()))
with checkpointing.Checkpointer(workdir, cfg) as ckpt:
  ckpt.save(state)
np.savez(workdir + "/expected.npz", *[np.asarray(x) for x in jax.tree.leaves(state.params)])
"""


def _cli(module, *args):
  return subprocess.run(
      [sys.executable, "-m", f"mobilenet_jax.{module}", *args],
      env=dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"), cwd=h.REPO,
      capture_output=True, text=True, timeout=120)


def _png(path, color):
  image = np.zeros((48, 48, 3), np.uint8)
  image[8:40, 12:36] = color
  Image.fromarray(image).save(path)
  return str(path)


@pytest.fixture(scope="module", name="run_on_8")
def _run_on_8(tmp_path_factory, shapes_tiny_dir):
  workdir = str(tmp_path_factory.mktemp("run8"))
  env = dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, "-c", _WRITE_ON_8, workdir, shapes_tiny_dir],
                          env=env, cwd=h.REPO, capture_output=True, text=True,
                          timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_load_evaluate_predict_on_one_device(run_on_8, tmp_path):
  model, variables, config = mobilenet_jax.load(run_on_8)
  expected = np.load(run_on_8 + "/expected.npz")
  for i, leaf in enumerate(jax.tree.leaves(variables["params"])):
    np.testing.assert_array_equal(np.asarray(leaf), expected[f"arr_{i}"])
  assert len(jax.tree.leaves(variables["params"])[0].sharding.device_set) == 1
  assert config.model.width == 0.25 and config.data.name == "shapes10/tiny"

  metrics = evaluate.run(run_on_8, batch_size=32)
  assert metrics["num_examples"] == 70 and metrics["split"] == "test"  # 7 per class.
  assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
  assert np.isfinite(metrics["loss"])

  paths = [_png(tmp_path / "a.png", (255, 0, 0)), _png(tmp_path / "b.png", (0, 0, 255))]
  results = predict.predict(model, variables, config.data, paths, top_k=5)
  for top in results:
    probs = [p for _, p in top]
    assert len(top) == 5 and probs == sorted(probs, reverse=True)
    assert 0.0 < sum(probs) <= 1.0 + 1e-5
  names = predict.class_names(config.data, 10)
  assert len(names) == 10 and names[0] != "0"


def test_load_errors(run_on_8):
  with pytest.raises(CheckpointError, match="step 3 .*available steps: 10"):
    mobilenet_jax.load(run_on_8, step=3)
  with pytest.raises(CheckpointError, match="No checkpoint"):
    mobilenet_jax.load(run_on_8 + "/nothing")
  mobilenet_jax.load(run_on_8, ema=True)  # The run had EMA on.


def test_ema_of_a_run_without_ema(run_on_8, monkeypatch):
  from mobilenet_jax import restore  # pylint: disable=g-import-not-at-top
  original = restore.readers.restore_weights

  def without_ema(*args, **kwargs):
    weights, step, config = original(*args, **kwargs)
    config.ema_decay = 0.0
    return weights, step, config

  monkeypatch.setattr(restore.readers, "restore_weights", without_ema)
  with pytest.raises(ConfigError, match="ema_decay=0"):
    restore.load(run_on_8, ema=True)


def test_predict_cli_and_class_name_fallback(run_on_8, tmp_path):
  image = _png(tmp_path / "x.png", (0, 255, 0))
  # A data_dir that is a file: the dataset can be neither found nor prepared.
  result = _cli("predict", f"--workdir={run_on_8}", f"--data_dir={image}", "--top_k=3",
                image)
  assert result.returncode == 0, result.stderr[-3000:]
  # (TFDS may announce that it prepares the built-in dataset for the names.)
  lines = result.stdout.strip().splitlines()
  lines = lines[lines.index(image):]
  assert len(lines) == 4 and all(line.startswith("  0.") for line in lines[1:])
  assert "warning: class names unavailable" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("mobilenet_jax.train.trainer") is None,
                    reason="the trainer is not there yet")
def test_after_training(tmp_path, shapes_tiny_dir):
  from configs import mobilenet_v1  # pylint: disable=g-import-not-at-top
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  config = mobilenet_v1.get_config("runlocal")
  config.data.name = "shapes10/tiny"
  config.data.data_dir = shapes_tiny_dir
  config.num_train_steps = 2
  config.checkpoint_every_steps = 1
  config.model.depth = "shallow"  # Every layer kind of the full one; compiles faster.
  workdir = str(tmp_path / "run")
  results = trainer.train_and_evaluate(config, workdir)

  # The CLI evaluates the last checkpoint exactly as the trainer did at the end.
  out = _cli("evaluate", f"--workdir={workdir}", "--ema")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "(70 examples)" in out.stdout
  metrics = evaluate.run(workdir)
  final = results["final"]["raw"]
  assert metrics["num_examples"] == 70
  np.testing.assert_allclose(metrics["top1"], final["top1"], atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], final["loss"], rtol=1e-4)
  assert f"top-1 {results['final']['ema']['top1']:.4f}" in out.stdout

  model, variables, loaded = mobilenet_jax.load(workdir, step=1)
  # The stored config is the run's, with the BatchNorm momentum the run chose.
  expected = json.loads(config.to_json_best_effort())
  expected["model"]["bn_momentum"] = 0.9  # train/batchnorm.py for a 2-step run.
  assert json.loads(loaded.to_json()) == expected == results["config"]
  image = _png(tmp_path / "y.png", (200, 200, 0))
  assert len(predict.predict(model, variables, loaded.data, [image])[0]) == 5

