"""Folders of image files through the same pipeline; odd formats; corrupt files."""

import logging

import numpy as np
from PIL import Image
import pytest

from mobilenet_jax import config_recipes
from mobilenet_jax import data
from mobilenet_jax.data import decode


def _save(path, mode, size, colour, fmt):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", size, colour).convert(mode).save(path, fmt)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """train/ (10 images) and val/ (5) of two classes, in every format we accept."""
  root = tmp_path_factory.mktemp("folder")
  formats = [("RGB", "JPEG", ".jpg"), ("RGB", "PNG", ".png"), ("L", "PNG", ".png"),
             ("RGBA", "PNG", ".png"), ("CMYK", "JPEG", ".jpeg")]
  colours = {"blue": (20, 40, 220), "red": (220, 30, 30)}
  # No greyscale in val/, where the test reads colours back.
  for split, kinds in (("train", formats), ("val", [formats[i] for i in (0, 3, 4)])):
    for name, colour in colours.items():
      for i, (mode, fmt, ext) in enumerate(kinds):
        size = (37 + 11 * i, 53 - 7 * i)  # Odd, non-square sizes.
        _save(root / split / name / f"{i}_{mode}{ext}", mode, size, colour, fmt)
  return root


def _config(root, **overrides):
  config = config_recipes.data_config("image_folder", 24)
  config.data_dir = str(root)
  config.update(overrides)
  return config


def test_folder_flows_through_the_pipeline(folder):
  config = _config(folder)
  info = data.get_dataset_info(config)
  assert info.class_names == ("blue", "red")
  assert (info.num_train_examples, info.num_eval_examples) == (10, 6)  # "val" split.
  batch = next(data.train_batches(config, 4, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.float32
  assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  batches = list(data.eval_batches(config, 4, process_index=0, process_count=1))
  assert sum(b["mask"].sum() for b in batches) == 6
  for batch in batches:
    for image, label, mask in zip(batch["image"], batch["label"], batch["mask"]):
      if mask:  # Solid colours: red or blue must survive every format.
        channel = image.mean(axis=(0, 1)).argmax()
        assert channel == (2 if label == 0 else 0)


def test_eval_split_test_falls_back_to_val(folder):
  # configs/default.py evaluates on "test"; a folder of train/ and val/ has none.
  config = _config(folder, eval_split="test")
  assert data.resolve_split(config, "test") == "val"
  assert data.get_dataset_info(config).num_eval_examples == 6
  with pytest.raises(data.SplitNotFoundError, match="no split 'dev'.*train, val"):
    data.resolve_split(config, "dev")


def test_cmyk_jpeg_decodes_to_rgb(folder):
  image = data.load_image_file(str(folder / "train" / "red" / "2_L.png"), _config(folder))
  assert image.shape == (24, 24, 3) and image.dtype == np.float32
  files = sorted((folder / "train" / "red").glob("*CMYK*"))
  rgb = (data.load_image_file(str(files[0]), _config(folder)) + 1) * 127.5
  np.testing.assert_allclose(rgb.mean(axis=(0, 1)), (220, 30, 30), atol=8)


def test_load_image_file_names_unreadable_files(tmp_path):
  bad = tmp_path / "not_an_image.jpg"
  bad.write_bytes(b"this is text")
  with pytest.raises(data.CorruptImageError, match="not_an_image.jpg"):
    data.load_image_file(str(bad), _config(tmp_path))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    data.load_image_file(str(tmp_path / "missing.png"), _config(tmp_path))


@pytest.fixture
def folder_with_corrupt_file(tmp_path):
  for split in ("train", "test"):
    for i in range(3):
      _save(tmp_path / split / "cls" / f"{i}.png", "RGB", (20, 20), (9, 9, 9), "PNG")
  for split in ("train", "test"):
    (tmp_path / split / "cls" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
  return tmp_path


def test_corrupt_image_error_mode_names_the_file(folder_with_corrupt_file):
  config = _config(folder_with_corrupt_file, on_corrupt_image="error")
  with pytest.raises(data.CorruptImageError, match="broken.jpg") as excinfo:
    list(data.eval_batches(config, 2, process_index=0, process_count=1))
  assert "\n" not in str(excinfo.value)


def test_corrupt_image_skip_mode_warns_and_drops(folder_with_corrupt_file, caplog):
  config = _config(folder_with_corrupt_file, on_corrupt_image="skip")
  with caplog.at_level(logging.WARNING):
    batches = list(data.eval_batches(config, 2, process_index=0, process_count=1))
  assert sum(b["mask"].sum() for b in batches) == 3  # 4 files, 1 unreadable.
  assert any("broken.jpg" in record.getMessage() for record in caplog.records)
  batch = next(data.train_batches(config, 4, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (4, 24, 24, 3)


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
  # A 16-bit scan: a gradient over the full range. Clipping at 255 (what PIL's
  # convert("RGB") does) would make all but the darkest 0.4% of it white.
  values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
  path = tmp_path / "scan16.png"
  Image.fromarray(values).save(path)
  with Image.open(path) as image:
    assert image.mode.startswith("I")  # PIL keeps the 16 bits.
  rgb = decode.decode_with_pil(path.read_bytes(), str(path))
  assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[..., 0], np.round(values / 257.0).astype(np.uint8))
  assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.fixture
def folder_with_class_only_in_val(tmp_path):
  for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "dog", "owl"))):
    for name in classes:
      _save(tmp_path / split / name / "0.png", "RGB", (20, 20), (9, 9, 9), "PNG")
  return tmp_path


def test_class_without_training_images_warns(folder_with_class_only_in_val, caplog):
  with caplog.at_level(logging.WARNING):
    info = data.get_dataset_info(_config(folder_with_class_only_in_val))
  assert info.class_names == ("cat", "dog", "owl")
  assert any("no image in the train split" in r.getMessage() and "owl" in r.getMessage()
             for r in caplog.records)


def test_class_without_training_images_can_be_an_error(folder_with_class_only_in_val):
  config = _config(folder_with_class_only_in_val, classes_without_train_images="error")
  with pytest.raises(data.MissingClassError, match="1 of 3 classes.*owl"):
    data.get_dataset_info(config)


def test_empty_train_folder_says_so(tmp_path):
  (tmp_path / "train" / "cat").mkdir(parents=True)
  _save(tmp_path / "val" / "cat" / "0.png", "RGB", (20, 20), (9, 9, 9), "PNG")
  with pytest.raises(data.SplitNotFoundError,
                     match=r"no split 'train'.*train holds no image files"):
    data.get_dataset_info(_config(tmp_path))


@pytest.fixture
def folder_with_unreadable_files(tmp_path):
  """Readable PNGs plus, in train/ and test/, a dangling link and a link loop."""
  for split in ("train", "test"):
    for i in range(4):
      _save(tmp_path / split / "cls" / f"{i}.png", "RGB", (20, 20), (9, 9, 9), "PNG")
    (tmp_path / split / "cls" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    loop = tmp_path / split / "cls" / "loop.jpg"
    loop.symlink_to(loop)
  return tmp_path


@pytest.mark.parametrize("split", ["train", "test"])
def test_unreadable_file_names_the_file_and_the_fix(folder_with_unreadable_files, split):
  config = _config(folder_with_unreadable_files, on_corrupt_image="error")
  with pytest.raises(data.CorruptImageError) as excinfo:
    if split == "train":
      next(data.train_batches(config, 6, seed=0, process_index=0, process_count=1))
    else:
      list(data.eval_batches(config, 2, process_index=0, process_count=1))
  message = str(excinfo.value)
  assert "dangling.jpg" in message or "loop.jpg" in message
  assert "on_corrupt_image=skip" in message and "\n" not in message


def test_unreadable_files_are_skipped(folder_with_unreadable_files, caplog):
  config = _config(folder_with_unreadable_files, on_corrupt_image="skip")
  with caplog.at_level(logging.WARNING):
    batches = list(data.eval_batches(config, 2, process_index=0, process_count=1))
    batch = next(data.train_batches(config, 4, seed=0, process_index=0, process_count=1))
  assert sum(b["mask"].sum() for b in batches) == 4  # 6 files, 2 unreadable.
  assert batch["image"].shape == (4, 24, 24, 3)
  warned = " ".join(record.getMessage() for record in caplog.records)
  assert "dangling.jpg" in warned and "loop.jpg" in warned


def test_file_deleted_during_the_run_is_named(tmp_path):
  for split in ("train", "val"):
    for i in range(3):
      _save(tmp_path / split / "cls" / f"{i}.png", "RGB", (20, 20), (9, 9, 9), "PNG")
  config = _config(tmp_path)
  assert data.get_dataset_info(config).num_eval_examples == 3  # Listed now...
  (tmp_path / "val" / "cls" / "1.png").unlink()  # ... deleted before it is read.
  with pytest.raises(data.CorruptImageError, match=r"1\.png.*FileNotFoundError"):
    list(data.eval_batches(config, 3, process_index=0, process_count=1))


def test_truncated_jpeg_in_training_is_named(tmp_path):
  # Training decodes JPEG crops with TensorFlow; a cut-short file must still reach
  # the per-file check (PIL) instead of failing TF's decoder without a name.
  noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
  for split in ("train", "val"):
    for i in range(3):
      (tmp_path / split / "cls").mkdir(parents=True, exist_ok=True)
      Image.fromarray(noise).save(tmp_path / split / "cls" / f"{i}.jpg", "JPEG")
  whole = (tmp_path / "train" / "cls" / "2.jpg").read_bytes()
  # Cut in the compressed data, well past the headers: TF's decoder would read them.
  (tmp_path / "train" / "cls" / "2.jpg").write_bytes(whole[:len(whole) * 2 // 3])
  with pytest.raises(data.CorruptImageError, match=r"2\.jpg"):
    next(data.train_batches(_config(tmp_path), 3, seed=0, process_index=0,
                            process_count=1))


def test_jpeg_extensions_people_use_are_images(tmp_path):
  # Browsers save JPEGs as .jfif; cameras and old tools write .JPG, .jpe, .JPEG.
  for split in ("train", "val"):
    for cls, ext in (("a", ".jfif"), ("b", ".JPE"), ("c", ".JPEG"), ("d", ".pjpeg")):
      for i in range(2):
        _save(tmp_path / split / cls / f"{i}{ext}", "RGB", (30, 20), (9, 9, 9), "JPEG")
  info = data.get_dataset_info(_config(tmp_path))
  assert info.class_names == ("a", "b", "c", "d")
  assert (info.num_train_examples, info.num_eval_examples) == (8, 8)


def test_class_folder_without_image_files_names_them(tmp_path):
  for split in ("train", "val"):
    _save(tmp_path / split / "cat" / "0.png", "RGB", (20, 20), (9, 9, 9), "PNG")
    (tmp_path / split / "dog").mkdir()
    (tmp_path / split / "dog" / "0.heic").write_bytes(b"not read")
    (tmp_path / split / "dog" / ".DS_Store").write_bytes(b"")
  with pytest.raises(data.DatasetNotFoundError, match=r"dog holds no file with an image "
                     r"extension \(0\.heic\).*\.jfif"):
    data.get_dataset_info(_config(tmp_path))
