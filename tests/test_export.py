"""Export of a briefly trained run: SavedModel, TFLite float32 and int8, the report."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import mobilenet_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from mobilenet_jax import export
from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.errors import ConfigError
from tests import ckpt_helpers as h


@pytest.fixture(scope="module", name="run")
def _run(tmp_path_factory, shapes_tiny_dir):
  """A MobileNet V1 0.25 trained for 300 steps (75 epochs) on shapes10/tiny at 32x32.

  Its eval split is its train split: 20 images per class teach it the training images
  (96% top-1) but not the held-out ones (~16%, near chance), and int8 agreement is only
  meaningful on inputs the model actually recognizes.
  """
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("trained"))
  cfg = h.config(**{
      "data.name": "shapes10/tiny", "data.data_dir": shapes_tiny_dir,
      "data.random_flip": False, "data.crop_area_range": (1.0, 1.0),
      "data.eval_split": "train",
      "global_batch_size": 50, "eval_batch_size": 100, "num_train_steps": 300,
      "log_every_steps": 50, "checkpoint_every_steps": 300, "optimizer.name": "sgd",
      "lr.base": 0.4, "lr.warmup_epochs": 2.0, "lr.schedule": "cosine",
      "label_smoothing": 0.0, "model.bn_momentum": 0.9, "ema_decay": 0.0})
  trainer.train_and_evaluate(cfg, workdir)
  return workdir


@pytest.fixture(scope="module", name="jax_model")
def _jax_model(run):
  """(probabilities function, random float inputs) of the run's JAX model."""
  model, variables, _ = mobilenet_jax.load(run)
  fn = jax.jit(export.serving_function(model, variables))
  images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  return fn, images


@pytest.fixture(scope="module", name="tflite_float")
def _tflite_float(run, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tflite") / "float.tflite")
  return export.TFLiteModel(export.export(run, "tflite", path))


def test_saved_model_matches_jax(run, jax_model, tmp_path):
  """Any batch size in, probabilities out, within 1e-4 of JAX; also uint8 pixels in."""
  from mobilenet_jax.data._tf import tf  # pylint: disable=g-import-not-at-top
  fn, images = jax_model
  out = str(tmp_path / "saved_model")
  export.export(run, "saved_model", out)
  serve = tf.saved_model.load(out).signatures[export.SIGNATURE]
  for batch in (images, images[:1]):
    probs = serve(images=tf.constant(batch))["probabilities"].numpy()
    np.testing.assert_allclose(probs, np.asarray(fn(batch)), atol=1e-4, rtol=0)

  pixels = np.round((images + 1) * 127.5).astype(np.uint8)
  export.export(run, "saved_model", out + "_uint8", input_kind="uint8")
  serve = tf.saved_model.load(out + "_uint8").signatures[export.SIGNATURE]
  np.testing.assert_allclose(
      serve(images=tf.constant(pixels))["probabilities"].numpy(),
      np.asarray(fn(pixels.astype(np.float32) / 127.5 - 1)), atol=1e-4, rtol=0)


def test_tflite_float_matches_jax_with_mobile_ops(jax_model, tflite_float):
  """Within 1e-4 of JAX; DEPTHWISE_CONV_2D and CONV_2D, no PAD/SLICE chains."""
  fn, images = jax_model
  np.testing.assert_allclose(tflite_float(images), np.asarray(fn(images)),
                             atol=1e-4, rtol=0)
  ops = tflite_float.op_names()
  assert ops.count("DEPTHWISE_CONV_2D") == 13 and ops.count("CONV_2D") == 14, ops
  assert not {"PAD", "PADV2", "SLICE", "STRIDED_SLICE", "GATHER", "SHAPE"} & set(ops)


def test_int8_agrees_with_float_on_the_eval_split(run, tflite_float, tmp_path):
  """Full-integer int8, calibrated on the train split: same top-1 as float on most of
  the images this run recognizes (its train split; the held-out agreement of a run
  that generalizes is tests/test_digits.py's).

  How well int8 agrees depends on the trained weights, which a 300-step run at lr 0.4
  makes chaotic: with this fixture's recipe, seeds 0/1/2 gave 0.81/0.985/0.97 on a
  Sapphire Rapids VM (2026-12-07; seed 0, the fixture's, had given >= 0.95 on earlier
  machines). A broken quantization agrees near chance (0.1-0.3), so 0.75 separates
  the two without depending on the draw.
  """
  path = export.export(run, "tflite", str(tmp_path / "int8.tflite"), quantize="int8",
                       num_calibration=200)
  int8 = export.TFLiteModel(path)
  assert "DEPTHWISE_CONV_2D" in int8.op_names()
  assert int8.size_bytes < 0.5 * tflite_float.size_bytes
  _, _, config = mobilenet_jax.load(run)
  images, labels = map(np.concatenate, zip(*export.eval_images(config)))
  assert len(labels) == 200
  float_top1 = tflite_float(images).argmax(-1)
  agreement = np.mean(int8(images).argmax(-1) == float_top1)
  assert agreement >= 0.75, agreement
  assert np.mean(float_top1 == labels) > 0.8  # Trained (chance: 10%).


def test_deployment_report(run):
  """Three rows with size, latency, top-1 on the eval split and agreement."""
  rows, note = export.deployment_report(run, runs=3, max_examples=100,
                                        num_calibration=100, threads=1)
  assert [r["model"] for r in rows] == ["JAX (Flax, float32)", "TFLite float32",
                                        "TFLite int8"]
  assert rows[0]["agreement"] == 1.0 and rows[1]["agreement"] >= 0.98
  assert all(r["top1"] is not None and r["latency_ms"] > 0 for r in rows)
  assert rows[2]["bytes"] < rows[1]["bytes"]
  assert "threads=1" in note and "shapes10/tiny train, 100 images" in note
  assert note.startswith("v1_w0.25_r32; batch 1")  # The run's architecture name.
  table = export.format_report(rows, note)
  assert table.count("\n| ") == 3  # Three rows under the header.


def test_report_names_the_split_it_read(shapes_tiny_dir):
  """shapes10/tiny has no "validation": the report reads "test" and says so."""
  cfg = h.config(**{"data.name": "shapes10/tiny", "data.data_dir": shapes_tiny_dir,
                    "data.eval_split": "validation"})
  _, labels, described = export._evaluation_set(cfg, 10)  # pylint: disable=protected-access
  assert described == f"shapes10/tiny test, {len(labels)} images"


def test_bad_requests_end_in_one_message(run, tmp_path):
  """No checkpoint, int8 SavedModel: a UserError; the CLI prints one line, exit 2."""
  with pytest.raises(CheckpointError, match="No checkpoint"):
    export.export(str(tmp_path / "empty"), "tflite", str(tmp_path / "x.tflite"))
  with pytest.raises(ConfigError, match="needs --format=tflite"):
    export.export(run, "saved_model", str(tmp_path / "sm"), quantize="int8")
  proc = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.export", f"--workdir={tmp_path}/empty",
       "--format=tflite", f"--out={tmp_path}/x.tflite"],
      env=dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"), cwd=h.REPO,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: No checkpoint in")
