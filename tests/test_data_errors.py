"""Missing datasets and bad settings end in one clear error."""

import pytest

from mobilenet_jax import config_recipes
from mobilenet_jax import data


def _config(name, data_dir, **overrides):
  config = config_recipes.data_config(name, 32)
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def test_unknown_dataset(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset_xyz"):
    data.get_dataset_info(_config("no_such_dataset_xyz", tmp_path))


def test_unprepared_dataset_is_not_downloaded(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as excinfo:
    data.get_dataset_info(_config("mnist", tmp_path))
  message = str(excinfo.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert f"tfds build mnist --data_dir={tmp_path}" in message
  assert not any(tmp_path.iterdir())  # Nothing downloaded or written.


def test_imagenet_explains_the_manual_download(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as excinfo:
    data.get_dataset_info(_config("imagenet2012", tmp_path))
  message = str(excinfo.value)
  assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
  assert str(tmp_path / "downloads" / "manual") in message
  assert "tfds build imagenet2012" in message


def test_missing_image_folder(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="not a directory"):
    data.get_dataset_info(_config("image_folder", tmp_path / "nope"))


def test_unknown_split(shapes_tiny_dir):
  config = _config("shapes10/tiny", shapes_tiny_dir, eval_split="dev")
  with pytest.raises(ValueError, match="no split 'dev'.*train, test"):
    data.get_dataset_info(config)
