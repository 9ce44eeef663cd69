"""A reference input pipeline written the way the flax ImageNet example writes its own.

For the data benchmark only (`python -m mobilenet_jax.data.benchmark`): the yardstick
this package's pipeline is measured against, in the same run. Like flax's
examples/imagenet/input_pipeline.py (read for its shape, written anew here): records
undecoded from TFDS, a private tf.data thread pool with one thread per op, shuffle
over 16 batches, and per example in one parallel map:

- train: the crop window sampled on `tf.image.extract_jpeg_shape`, only that window
  decoded (`tf.image.decode_and_crop_jpeg`), bicubic resize without antialiasing,
  random flip, normalization by ImageNet's channel means and deviations;
- eval: the central crop of side S / (S + 32) of the shorter side, decoded alone,
  the same resize and normalization.

It differs from flax's in two ways, both to measure like with like: the crop's area
and aspect ranges are the benchmarked config's (flax: area 0.08-1), and it reads
image folders too (the file list sorted and shuffled, `tf.io.read_file`). It handles
JPEGs only and never reports a bad file.
"""

from __future__ import annotations

import os

from mobilenet_jax.data._tf import tf

_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_CROP_PADDING = 32


def _random_crop(image_bytes, image_size: int, area_range, aspect_range):
  shape = tf.image.extract_jpeg_shape(image_bytes)
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      min_object_covered=0.1, aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  # The sampler gives up after 10 tries and returns the whole image: take the centre.
  gave_up = tf.reduce_all(tf.equal(shape[:2], tf.shape(image)[:2]))
  return tf.cond(gave_up, lambda: _center_crop(image_bytes, image_size),
                 lambda: _resize(image, image_size))


def _center_crop(image_bytes, image_size: int):
  shape = tf.image.extract_jpeg_shape(image_bytes)
  side = tf.cast(image_size / (image_size + _CROP_PADDING)
                 * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
  window = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  return _resize(image, image_size)


def _resize(image, image_size: int):
  return tf.image.resize(image, [image_size, image_size], method="bicubic")


def _normalize(image):
  return (image - tf.constant(_MEAN_RGB)) / tf.constant(_STDDEV_RGB)


def _records(data_config, split: str) -> tf.data.Dataset:
  """{"image": JPEG bytes, "label"} of a TFDS split or an image folder's split."""
  if data_config.name == "image_folder":
    root = os.path.join(data_config.data_dir, split)
    classes = sorted(tf.io.gfile.listdir(root))
    files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
             for f in sorted(tf.io.gfile.listdir(os.path.join(root, c)))]
    ds = tf.data.Dataset.from_tensor_slices(
        ([f for f, _ in files], [label for _, label in files])).shuffle(
            len(files), seed=0)
    return ds.map(lambda f, label: {"image": tf.io.read_file(f), "label": label},
                  num_parallel_calls=tf.data.AUTOTUNE)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(data_config.name, data_dir=data_config.data_dir)
  return builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def dataset(data_config, batch_size: int, train: bool, split: str) -> tf.data.Dataset:
  """Endless batches {"image": float32 [B, S, S, 3], "label"} of `split`."""
  size = data_config.image_size

  def preprocess(example):
    if train:
      image = _random_crop(example["image"], size, data_config.crop_area_range,
                           data_config.crop_aspect_range)
      image = tf.image.random_flip_left_right(image)
    else:
      image = _center_crop(example["image"], size)
    image = _normalize(tf.reshape(image, [size, size, 3]))
    return {"image": image, "label": example["label"]}

  ds = _records(data_config, split)
  options = tf.data.Options()
  options.threading.private_threadpool_size = len(os.sched_getaffinity(0))  # flax: 48.
  options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options).repeat()
  if train:
    ds = ds.shuffle(16 * batch_size, seed=0)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=True).prefetch(10)
