"""configs/small_images.py and its pad-and-crop augmentation."""

import numpy as np
import pytest

from configs import small_images
from mobilenet_jax.train import validation as config_validation
from mobilenet_jax.errors import ConfigError


def test_config_honours_dataset_classes_and_flips():
  config = small_images.get_config("model=v1,width=0.5,res=40")
  assert (config.data.name, config.model.num_classes, config.data.image_size) == (
      "fashion_mnist", 10, 40)
  assert config.data.train_crop == "pad" and config.data.random_flip
  assert config.data.eval_crop_fraction == 1.0
  digits = small_images.get_config("dataset=mnist,num_classes=10")
  assert not digits.data.random_flip  # A mirrored digit is another symbol.
  assert small_images.get_config("dataset=mnist,flip=true").data.random_flip
  folder = small_images.get_config("dataset=image_folder,num_classes=7,model=v2,width=0.35")
  assert (folder.data.name, folder.model.num_classes, folder.model.name) == (
      "image_folder", 7, "mobilenet_v2")
  config_validation.validate(config)
  with pytest.raises(ConfigError, match="model='v3' must be v1 or v2"):
    small_images.get_config("model=v3")
  with pytest.raises(ConfigError, match="depth cannot be used here"):
    small_images.get_config("model=v2,depth=shallow")


def test_pad_crop_shifts_and_never_zooms():
  from mobilenet_jax.data import preprocessing  # pylint: disable=g-import-not-at-top
  from mobilenet_jax.data._tf import tf  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  padded = np.pad(image.astype(np.float32) / 127.5 - 1.0, ((4, 4), (4, 4), (0, 0)),
                  constant_values=-1.0)  # Black border, in [-1, 1].
  shifts = set()
  for seed in range(12):
    out = preprocessing.pad_crop_preprocess(
        tf.constant(image), tf.constant([seed, 1], tf.int64), 32, 0.125,
        random_flip=False).numpy()
    again = preprocessing.pad_crop_preprocess(
        tf.constant(image), tf.constant([seed, 1], tf.int64), 32, 0.125,
        random_flip=False).numpy()
    np.testing.assert_array_equal(out, again)  # Stateless: same seed, same crop.
    match = [(dy, dx) for dy in range(9) for dx in range(9)
             if np.allclose(out, padded[dy:dy + 32, dx:dx + 32], atol=1e-5)]
    assert len(match) == 1, seed  # A window of the padded image, at full scale.
    shifts.add(match[0])
  assert len(shifts) > 6  # The crop moves.
