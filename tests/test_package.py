"""The package: pyproject metadata and console scripts, configs found when installed,
and the public eval transform `mobilenet_jax.preprocess`."""

import importlib
import inspect
import os
import tomllib

import numpy as np
from PIL import Image

import mobilenet_jax
from configs import common
from mobilenet_jax import config_files, data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_pyproject_matches_the_package():
  project = _pyproject()["project"]
  assert project["name"] == "mobilenet-jax"
  assert project["version"] == mobilenet_jax.__version__
  # Dependencies are read from requirements.txt, not kept twice.
  assert project["dynamic"] == ["dependencies"]
  deps = _pyproject()["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
  assert deps == ["requirements.txt"]
  for name in ("mobilenet-train", "mobilenet-evaluate", "mobilenet-predict"):
    assert name in project["scripts"]
  for target in project["scripts"].values():
    module, function = target.split(":")
    entry = getattr(importlib.import_module(module), function)
    # Console scripts are called with no arguments.
    assert not [p for p in inspect.signature(entry).parameters.values()
                if p.default is inspect.Parameter.empty]


def test_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No configs/ here: the importable package is used.
  resolved = config_files.resolve_config_path("configs/default.py:runlocal")
  path, _, args = resolved.partition(":")
  assert os.path.isfile(path) and path.endswith(os.path.join("configs", "default.py"))
  assert args == "runlocal"
  assert config_files.resolve_argv(["prog", "--config=configs/mobilenet_v1.py"])[1] == (
      "--config=" + os.path.join(os.path.dirname(path), "mobilenet_v1.py"))
  # Other paths, and files that exist here, are left alone.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "mine.py").write_text("")
  assert config_files.resolve_config_path("configs/mine.py") == "configs/mine.py"
  assert config_files.resolve_config_path("x/default.py") == "x/default.py"


def test_preprocess_is_the_eval_transform(tmp_path):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
  path = str(tmp_path / "photo.png")
  Image.fromarray(photo).save(path)
  config = common.data_config("image_folder", 32)
  batch = mobilenet_jax.preprocess([photo, photo[:8, :8]], 32)
  assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32
  assert -1.0 <= batch.min() and batch.max() <= 1.0
  np.testing.assert_array_equal(batch[0], data.load_image_file(path, config))
  grey = mobilenet_jax.preprocess(photo[..., 0], 16, crop_fraction=1.0)
  assert grey.shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_eval_crop_is_centred_on_small_images():
  """A centred dot stays centred: crop-then-resize moved it by a source pixel."""
  image = np.zeros((8, 8), np.uint8)
  image[3:5, 3:5] = 255
  out = mobilenet_jax.preprocess(image, 32)[0, ..., 0]
  np.testing.assert_allclose(out, out[::-1, ::-1], atol=1e-5)
  weights = (out + 1.0).sum(1)
  assert abs(float((weights * np.arange(32)).sum() / weights.sum()) - 15.5) < 1e-3
