"""Preparing TFDS's fashion_mnist from local IDX files (mobilenet_jax/data/prepare.py),
on tiny IDX files written here: the suite never needs the Debian package."""

import dataclasses
import gzip
import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from mobilenet_jax.data import idx, prepare
from mobilenet_jax.data.errors import DatasetNotFoundError
from tests import ckpt_helpers as h

COUNTS = {"train": 30, "test": 10}


def _idx_bytes(values: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I",
                                                          *values.shape)
  return header + values.astype(np.uint8).tobytes()


def _write_source(folder, rng) -> tuple[dict, dict]:
  """Four IDX files (train gzipped, test plain), as the dataset names them;
  ({split: (images, labels)}, {file: SHA-256 of its content})."""
  folder.mkdir(parents=True, exist_ok=True)
  arrays, digests = {}, {}
  for split, (images_stem, labels_stem) in prepare.FASHION_MNIST.files.items():
    n = COUNTS[split]
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    for stem, values in ((images_stem, images), (labels_stem, labels)):
      raw = _idx_bytes(values)
      digests[stem] = hashlib.sha256(raw).hexdigest()
      if split == "train":
        (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
      else:
        (folder / stem).write_bytes(raw)
    arrays[split] = (images, labels)
  return arrays, digests


def _tiny_spec(digests):
  return dataclasses.replace(prepare.FASHION_MNIST, sha256=digests, num_examples=COUNTS)


def test_prepares_a_dataset_that_tfds_and_the_pipeline_read(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import config_recipes as common  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import data  # pylint: disable=g-import-not-at-top
  arrays, digests = _write_source(tmp_path / "src", np.random.default_rng(0))
  data_dir = str(tmp_path / "tfds")
  where, written = prepare.prepare(_tiny_spec(digests), str(tmp_path / "src"), data_dir)
  assert written and where == os.path.join(data_dir, "fashion_mnist", "3.0.1")
  for split, (images, labels) in arrays.items():
    ds = tfds.load("fashion_mnist", data_dir=data_dir, split=split)
    got = sorted((int(ex["label"]), ex["image"].tobytes()) for ex in tfds.as_numpy(ds))
    want = sorted((int(l), i[..., None].tobytes()) for i, l in zip(images, labels))
    assert got == want  # Every image, pixel for pixel, with its label.
  config = common.data_config("fashion_mnist", 32)
  config.data_dir, config.eval_split = data_dir, "test"
  info = data.get_dataset_info(config)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (10, 30, 10)
  assert info.class_names[0] == "T-shirt/top"
  (batch,) = list(data.eval_batches(config, 10, process_index=0, process_count=1))
  assert batch["image"].shape == (10, 32, 32, 3) and batch["mask"].sum() == 10
  # The small-image recipe's pad-and-crop path reads it too.
  from configs import small_images  # pylint: disable=g-import-not-at-top
  small = small_images.get_config("res=40").data
  small.data_dir = data_dir
  batch = next(iter(data.train_batches(small, 8, 0, process_index=0, process_count=1)))
  assert batch["image"].shape == (8, 40, 40, 3) and batch["image"].min() >= -1.0
  # A second call finds it prepared and reads nothing (the source may be gone).
  assert prepare.prepare(_tiny_spec(digests), str(tmp_path / "gone"), data_dir) == (
      where, False)


def test_a_changed_file_is_refused_before_anything_is_written(tmp_path):
  _, digests = _write_source(tmp_path / "src", np.random.default_rng(1))
  wrong = {**digests, "t10k-images-idx3-ubyte": "0" * 64}
  with pytest.raises(DatasetNotFoundError, match=r"t10k-images-idx3-ubyte: the SHA-256 "
                     r"of its decompressed content is [0-9a-f]{64}, not fashion_mnist's "
                     r"0{64}.*--reinstall dataset-fashion-mnist"):
    prepare.prepare(_tiny_spec(wrong), str(tmp_path / "src"), str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds" / "fashion_mnist").exists()


def test_counts_shapes_and_labels_are_checked(tmp_path):
  arrays, digests = _write_source(tmp_path / "src", np.random.default_rng(2))
  spec = dataclasses.replace(_tiny_spec(digests), num_examples={"train": 31, "test": 10})
  with pytest.raises(DatasetNotFoundError, match=r"train split: .*train-images-idx3-ubyte"
                     r"\.gz holds images \(30, 28, 28\), expected \(31, 28, 28\)"):
    prepare.read_verified(spec, str(tmp_path / "src"))
  labels = arrays["test"][1].copy()
  labels[3] = 10
  raw = _idx_bytes(labels)
  (tmp_path / "src" / "t10k-labels-idx1-ubyte").write_bytes(raw)
  spec = _tiny_spec({**digests, "t10k-labels-idx1-ubyte": hashlib.sha256(raw).hexdigest()})
  with pytest.raises(DatasetNotFoundError, match="has label 10, outside 0..9"):
    prepare.read_verified(spec, str(tmp_path / "src"))


@pytest.mark.parametrize("content, message", [
    (b"\0\0\x08\x01\0\0\0\x05abc", r"11 bytes where its header \(5,\) needs 13"),
    (b"\0\0\x0d\x01\0\0\0\x01abcd", "not an IDX file of unsigned bytes"),
    (b"\x1f\x8b\x08\0garbage", "cannot read it"),
])
def test_damaged_idx_files_name_the_file(tmp_path, content, message):
  path = tmp_path / "file"
  path.write_bytes(content)
  with pytest.raises(idx.IdxError, match=message) as error:
    idx.read_idx(str(path))
  assert str(path) in str(error.value)


def test_missing_source_is_one_line_naming_the_apt_package(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.data.prepare", "fashion_mnist",
       f"--source_dir={tmp_path}/nowhere", f"--data_dir={tmp_path}/tfds"],
      cwd=h.REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"))
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(errors) == 1 and errors[0].startswith("error: fashion_mnist: "), errors
  assert "apt-get install -y dataset-fashion-mnist" in errors[0]
  assert "--source_dir=DIR" in errors[0]
  assert not (tmp_path / "tfds" / "fashion_mnist").exists()
