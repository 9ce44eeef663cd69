"""Training decodes only the crop of a JPEG: today's crops (same seeds, same windows,
nearly the same pixels) on TFDS and image folders; the C++ resize equals TF's."""

import functools
import io
import os
import shutil
import subprocess

import numpy as np
from PIL import Image
import pytest

from mobilenet_jax import config_recipes as common
from mobilenet_jax import data
from mobilenet_jax.data import decode
from mobilenet_jax.data import imagenet_like
from mobilenet_jax.data import preprocessing
from mobilenet_jax.data import resize
from mobilenet_jax.data._tf import tf

SEEDS = 24


def _jpeg(image: Image.Image, **options) -> bytes:
  out = io.BytesIO()
  image.save(out, "JPEG", quality=90, **options)
  return out.getvalue()


@pytest.fixture(scope="module", name="jpegs")
def _jpegs():
  """Photos as ImageNet stores them, a grey one, a progressive one and a tiny one."""
  photo = Image.open(io.BytesIO(imagenet_like.render_jpeg("train", 0)))
  return {"photo_0": imagenet_like.render_jpeg("train", 0),
          "photo_1": imagenet_like.render_jpeg("train", 1),
          "grey": _jpeg(photo.convert("L").resize((200, 150))),
          "progressive": _jpeg(photo.resize((240, 320)), progressive=True),
          "tiny": _jpeg(photo.resize((7, 5)))}


def _window(seed: int, area_range=(0.25, 1.0)):
  return functools.partial(preprocessing.crop_window, crop_seed=tf.constant([seed, 7]),
                           area_range=area_range, aspect_range=(3 / 4, 4 / 3))


def test_fused_crops_are_todays_crops(jpegs):
  areas = {"today": [], "fused": []}
  for name, encoded in jpegs.items():
    encoded = tf.constant(encoded)
    full = decode.decode_fast(encoded, tf.constant(name))  # Today: decode, then crop.
    height, width = full.shape[:2]
    for seed in range(SEEDS):
      window = _window(seed)
      begin, size = window(tf.shape(full))
      today = tf.slice(full, begin, size).numpy().astype(np.float32)
      fused = decode.decode_and_crop_fast(encoded, tf.constant(name), window).numpy()
      checked, error = decode.decode_and_crop_checked(encoded, tf.constant(name),
                                                      "error", "", window)
      assert not error.numpy(), name
      assert fused.shape == today.shape == tuple(checked.shape), name
      # Same window: equal but for JPEG rounding (chroma upsampling at the crop's
      # edges for TF, PIL's decoder for folders); another window differs by tens of
      # levels almost everywhere.
      for got in (fused, checked.numpy()):
        diff = np.abs(got - today)
        assert np.median(diff) <= 1.0 and diff.mean() < 3.0, name
      areas["today"].append(today.shape[0] * today.shape[1] / (height * width))
      areas["fused"].append(fused.shape[0] * fused.shape[1] / (height * width))
  assert areas["fused"] == areas["today"]
  big = areas["today"][:2 * SEEDS]  # The two photos: Inception's area range.
  assert 0.25 <= min(big) and max(big) <= 1.0 and 0.45 < np.mean(big) < 0.8


def test_cmyk_and_png_keep_the_full_decode():
  rgb = Image.new("RGB", (40, 30), (200, 30, 30))
  window = _window(3)
  for encoded in (_jpeg(rgb.convert("CMYK")), _png(rgb)):
    crop = decode.decode_and_crop_fast(tf.constant(encoded), tf.constant("x"), window)
    checked, _ = decode.decode_and_crop_checked(tf.constant(encoded), tf.constant("x"),
                                                "error", "", window)
    for image in (crop.numpy(), checked.numpy()):
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (200, 30, 30), atol=8)


def test_jpeg_the_decoder_rejects_says_how_to_find_it():
  error = tf.errors.InvalidArgumentError(
      None, None, "jpeg::Uncompress failed. Invalid JPEG data or crop window.")
  assert "fused_decode_crop=False" in str(decode.undecodable_jpeg_error(error))
  assert decode.undecodable_jpeg_error(
      tf.errors.InvalidArgumentError(None, None, "other")) is None


def _png(image: Image.Image) -> bytes:
  out = io.BytesIO()
  image.save(out, "PNG")
  return out.getvalue()


@pytest.fixture(scope="module", name="both_forms")
def _both_forms(tmp_path_factory):
  """The ImageNet-like input at a tiny size, as a TFDS dataset and an image folder."""
  dirs = imagenet_like.prepare(str(tmp_path_factory.mktemp("imagenet_like")),
                               num_train=16, num_val=4, num_classes=2)
  return dirs


@pytest.mark.parametrize("name,tolerance", [("imagenet_like", 0.01),
                                            ("image_folder", 0.03)])
def test_pipeline_trains_on_the_same_crops(both_forms, name, tolerance):
  config = common.data_config(name, 48)
  config.update(data_dir=both_forms[name], eval_split="val", shuffle_buffer=16)
  kwargs = dict(global_batch_size=8, seed=5, process_index=0, process_count=1)
  fused = next(data.train_batches(config, **kwargs))
  config.fused_decode_crop = False
  today = next(data.train_batches(config, **kwargs))
  np.testing.assert_array_equal(fused["label"], today["label"])
  # Per image (flips included): a crop elsewhere differs by ~0.2-0.5 on average.
  per_image = np.abs(fused["image"] - today["image"]).mean(axis=(1, 2, 3))
  assert per_image.max() < tolerance, per_image


@pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "c++") is None,
                    reason="no C++ compiler: TensorFlow's resize is used")
def test_the_resize_op_builds_where_a_compiler_exists():
  # Else the equality test below is skipped and a broken build goes unseen (it did:
  # TensorFlow's Eigen headers fail under -march=native on AVX512-FP16 CPUs).
  assert resize.available()


def test_a_failed_build_retries_with_the_next_flags_then_warns_in_one_line(
    monkeypatch, tmp_path, caplog):
  commands = []

  def compiler(command, **kwargs):
    commands.append(command)
    raise subprocess.CalledProcessError(1, command, stderr="In file included from x.h\n"
                                        "x.h:740:49: error: expected initializer\n"
                                        "  740 | bad code\n")

  monkeypatch.setattr(subprocess, "run", compiler)
  monkeypatch.setattr(resize, "_library_path", lambda: str(tmp_path / "op.so"))
  monkeypatch.delenv(resize.DISABLE_ENV, raising=False)
  resize._op.cache_clear()  # pylint: disable=protected-access
  try:
    assert resize._op() is None  # pylint: disable=protected-access
  finally:
    resize._op.cache_clear()  # pylint: disable=protected-access
  assert [c[c.index("-O3") + 1:c.index("-shared")] for c in commands] == [
      list(flags) for flags in resize._CPU_FLAG_SETS]  # pylint: disable=protected-access
  (warning,) = [r.getMessage() for r in caplog.records if "resize op" in r.getMessage()]
  assert warning.endswith("x.h:740:49: error: expected initializer")
  assert "\n" not in warning and not os.listdir(tmp_path)


@pytest.mark.skipif(not resize.available(), reason="the C++ resize op did not build")
@pytest.mark.parametrize("shape,size", [
    ((290, 387, 3), (224, 224)), ((375, 500, 3), (292, 256)), ((30, 40, 3), (224, 224)),
    ((1, 1, 3), (5, 7)), ((8, 8, 1), (7, 9)), ((1200, 1500, 3), (32, 32)),
    ((224, 224, 3), (224, 224)), ((100, 300, 4), (64, 16))])
def test_resize_op_equals_tensorflow(shape, size):
  image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  expected = tf.image.resize(image, size, method="bilinear", antialias=True).numpy()
  for flip in (False, True):
    got = resize.resize_antialiased(tf.constant(image), size, flip=flip, divisor=2.0,
                                    offset=-3.0).numpy()
    want = np.clip(expected, 0, 255) / 2.0 - 3.0
    np.testing.assert_allclose(got, want[:, ::-1] if flip else want, atol=1e-4)


def test_resize_without_the_op_is_the_same(monkeypatch):
  image = tf.constant(np.random.default_rng(1).integers(0, 256, (50, 70, 3)), tf.uint8)
  fast = resize.resize_antialiased(image, [32, 32], flip=True, divisor=0.5, offset=1.0)
  monkeypatch.setattr(resize, "_op", lambda: None)
  slow = resize.resize_antialiased(image, [32, 32], flip=True, divisor=0.5, offset=1.0)
  np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=1e-3)
