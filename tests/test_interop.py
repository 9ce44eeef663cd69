"""Keras -> run directory: parity with keras.applications, the run's tools, bad inputs.

keras.applications models are built offline (weights=None), their kernels redrawn at a
fan-in scale and their BatchNorm statistics randomized, so that eval-mode outputs are
far from uniform and depend on the input: a wrong mapping cannot hide in them.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")

import mobilenet_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from mobilenet_jax import costs
from mobilenet_jax import models
from mobilenet_jax.errors import CheckpointError, ConfigError
from mobilenet_jax.interop import from_keras
from mobilenet_jax.interop.from_keras import KerasImportError
from tests import ckpt_helpers as h

# Forward passes only: XLA's cheapest optimization level compiles a MobileNet in a
# fraction of the default's time, and the computation is the same.
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def _randomize(model, seed: int = 0):
  """Fan-in scaled kernels, random BatchNorm scale/offset and moving statistics."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.moving_mean.shape[0]
      layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
      layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
      layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
    elif layer.weights:
      shape = tuple(layer.kernel.shape)
      depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
      fan_in = np.prod(shape[:2] if depthwise else shape[:-1])
      # A larger classifier gain spreads the logits, so probabilities are far from flat.
      gain = 8.0 if layer.name in ("conv_preds", "predictions") else 2.0
      layer.kernel.assign(rng.normal(0, np.sqrt(gain / fan_in), shape).astype(np.float32))
      if getattr(layer, "bias", None) is not None:
        layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype(np.float32))
  return model


def _keras_model(arch, width, res, seed=0):
  return _randomize(from_keras.build_keras_model(arch, width, res), seed)


def _jax_probs(model, variables, images):
  fn = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))
  return np.asarray(fn.lower(variables, images).compile(
      compiler_options=_FAST_COMPILE)(variables, images))


def _keras_trainable(model) -> int:
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("arch,width", [("v1", 0.25), ("v1", 1.0), ("v2", 0.35),
                                        ("v2", 1.0)])
def test_converted_model_equals_keras(arch, width):
  """Same probabilities as Keras within 1e-4 at 224 and 128; same trainable count."""
  rng = np.random.default_rng(1)
  at_224 = _keras_model(arch, width, 224)
  for res in (224, 128):
    keras_model = at_224
    if res != 224:  # The same weights in a model built for 128x128 inputs.
      keras_model = from_keras.build_keras_model(arch, width, res)
      keras_model.set_weights(at_224.get_weights())
    images = rng.uniform(-1, 1, (2, res, res, 3)).astype(np.float32)
    expected = np.asarray(keras_model(images, training=False))
    # Not a degenerate comparison: peaked, and different for the two images.
    assert expected.max() > 0.05 and np.abs(expected[0] - expected[1]).max() > 1e-3

    config, variables = from_keras.convert(keras_model, arch, width)
    model = models.create(config.model)
    np.testing.assert_allclose(_jax_probs(model, variables, images), expected,
                               atol=1e-4, rtol=0)
    assert config.data.image_size == res and config.model.num_classes == 1000
    assert costs.count_costs(model, res).trainable_params == _keras_trainable(keras_model)


def test_v2_odd_sizes_follow_keras():
  """Keras V2 pads stride-2 inputs like SAME also on odd sizes (72 -> 36 -> 18 -> 9)."""
  keras_model = _keras_model("v2", 0.35, 72)
  images = np.random.default_rng(2).uniform(-1, 1, (2, 72, 72, 3)).astype(np.float32)
  config, variables = from_keras.convert(keras_model, "v2", 0.35)
  np.testing.assert_allclose(
      _jax_probs(models.create(config.model), variables, images),
      np.asarray(keras_model(images, training=False)), atol=1e-4, rtol=0)


@pytest.fixture(scope="module", name="v1_small")
def _v1_small():
  """A randomized Keras MobileNet V1 0.25 at 128x128 and two input images."""
  images = np.random.default_rng(3).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
  return _keras_model("v1", 0.25, 128, seed=4), images


def test_run_directory_loads_like_a_trained_run(v1_small, tmp_path):
  """load() gives Keras' probabilities; the config says what the model is."""
  keras_model, images = v1_small
  workdir = str(tmp_path / "run")
  from_keras.import_keras_model(keras_model, "v1", 0.25, workdir)
  model, variables, config = mobilenet_jax.load(workdir)
  np.testing.assert_allclose(_jax_probs(model, variables, images),
                             np.asarray(keras_model(images, training=False)),
                             atol=1e-4, rtol=0)
  assert (config.model.bn_epsilon, config.model.bn_momentum) == (1e-3, 0.99)
  assert config.model.activation == "relu6" and config.model.dropout_rate == 0.001
  assert config.imported_from.classes.startswith("1000: ImageNet classes")
  with pytest.raises(ConfigError, match="no moving average"):
    mobilenet_jax.load(workdir, ema=True)
  with pytest.raises(CheckpointError, match="already holds a run"):
    from_keras.import_keras_model(keras_model, "v1", 0.25, workdir)


def test_background_class_for_tf_slim_labels(v1_small):
  """1001 classes: background first, the 1000 Keras probabilities unchanged."""
  keras_model, images = v1_small
  config, variables = from_keras.convert(keras_model, "v1", 0.25, num_classes=1001)
  probs = _jax_probs(models.create(config.model), variables, images)
  assert probs.shape == (2, 1001) and probs[:, 0].max() < 1e-6
  np.testing.assert_allclose(probs[:, 1:], np.asarray(keras_model(images, training=False)),
                             atol=1e-4, rtol=0)
  assert "background" in config.imported_from.classes
  with pytest.raises(KerasImportError, match="choose 1000, or 1001"):
    from_keras.convert(keras_model, "v1", 0.25, num_classes=10)


def test_bad_inputs_name_the_layer(v1_small, tmp_path):
  """Another family, another width, an odd V1 resolution, a mismatched weights file."""
  keras_model, _ = v1_small
  with pytest.raises(KerasImportError, match="no layer 'Conv1'.*MobileNetV2"):
    from_keras.convert(keras_model, "v2", 0.25)
  with pytest.raises(KerasImportError, match="Keras layer 'conv1' has kernel of shape"):
    from_keras.convert(keras_model, "v1", 0.5)
  with pytest.raises(KerasImportError, match="'conv_pad_6'.*25x25.*multiple of 32"):
    from_keras.convert(from_keras.build_keras_model("v1", 0.25, 200), "v1", 0.25)
  weights = str(tmp_path / "v1_025.weights.h5")
  keras_model.save_weights(weights)
  with pytest.raises(KerasImportError, match="does not hold the weights"):
    from_keras.build_keras_model("v1", 0.5, 128, weights)
  other = keras.Sequential([keras.Input((128, 128, 3)),
                            keras.layers.Conv2D(8, 3, use_bias=False, name="conv1")])
  with pytest.raises(KerasImportError, match="no layer 'conv1_bn'"):
    from_keras.convert(other, "v1", 0.25)
  with pytest.raises(KerasImportError, match="square RGB"):
    from_keras.convert(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]),
                       "v1", 0.25)


def test_command_line_reads_a_weights_file(v1_small, tmp_path):
  """`python -m mobilenet_jax.interop.from_keras --weights=FILE` equals the model."""
  keras_model, images = v1_small
  weights, workdir = str(tmp_path / "v1.weights.h5"), str(tmp_path / "run")
  keras_model.save_weights(weights)
  proc = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.interop.from_keras", "--arch=v1",
       "--width=0.25", "--res=128", f"--weights={weights}", f"--workdir={workdir}"],
      env=dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"), cwd=h.REPO,
      capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  model, variables, _ = mobilenet_jax.load(workdir)
  np.testing.assert_allclose(_jax_probs(model, variables, images),
                             np.asarray(keras_model(images, training=False)),
                             atol=1e-4, rtol=0)


def test_finetune_from_keras_trains_only_a_new_classifier(tmp_path, shapes_tiny_dir):
  """The Keras seed scenario: init_from an imported run, a new class count (10), a
  frozen backbone, two real train steps; the backbone stays Keras' to the bit."""
  from mobilenet_jax.train import trainer  # pylint: disable=g-import-not-at-top
  source, workdir = str(tmp_path / "keras"), str(tmp_path / "finetune")
  config, keras_variables = from_keras.convert(_keras_model("v1", 0.25, 32, seed=5),
                                               "v1", 0.25)
  from_keras.write_run(config, keras_variables, source)
  cfg = h.config(**{
      "data.name": "shapes10/tiny", "data.data_dir": shapes_tiny_dir,
      "num_train_steps": 2, "checkpoint_every_steps": 1, "eval_batch_size": 70,
      "init_from.workdir": source, "init_from.backbone_only": True,
      "init_from.freeze_backbone": True, "ema_decay": 0.99})
  trainer.train_and_evaluate(cfg, workdir)

  _, tuned, _ = mobilenet_jax.load(workdir)
  _, after_one_step, _ = mobilenet_jax.load(workdir, step=1)
  for collection in ("params", "batch_stats"):
    backbone = {k: v for k, v in tuned[collection].items() if k != "classifier"}
    h.assert_trees_equal(backbone, {k: v for k, v in keras_variables[collection].items()
                                    if k != "classifier"})
  head = tuned["params"]["classifier"]["kernel"]
  assert head.shape == (256, 10)
  # The EMA started from the imported weights: its backbone is Keras' too.
  _, ema, _ = mobilenet_jax.load(workdir, ema=True)
  h.assert_trees_equal({k: v for k, v in ema["params"].items() if k != "classifier"},
                       {k: v for k, v in keras_variables["params"].items()
                        if k != "classifier"})
  assert np.abs(np.asarray(head) - np.asarray(
      after_one_step["params"]["classifier"]["kernel"])).max() > 0
