"""Paper-faithful preprocessing (reference facts, section 6), with stateless randomness.

Train: Inception-style random crop (random area and aspect ratio), resize, random
horizontal flip. Eval: central square crop covering `crop_fraction` (0.875) of the
shorter side, resized: the same as resizing to image_size / 0.875 and cropping the
center. Pixels go to [-1, 1] (x / 127.5 - 1), as TF-slim and Keras MobileNets expect.
"""

from __future__ import annotations

from mobilenet_jax.data._tf import tf


def normalize(image: tf.Tensor) -> tf.Tensor:
  """uint8 (or float in [0, 255]) pixels to float32 in [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  # Antialiasing matters when shrinking (ImageNet photos, 64px shapes to 32px).
  image = tf.image.resize(image, [image_size, image_size], method="bilinear",
                          antialias=True)
  return tf.clip_by_value(image, 0.0, 255.0)


def train_preprocess(image: tf.Tensor, seed: tf.Tensor, image_size: int,
                     area_range=(0.25, 1.0), aspect_range=(3 / 4, 4 / 3),
                     random_flip: bool = True) -> tf.Tensor:
  """Random crop + resize + flip of a uint8 [H, W, 3] image; float32 [S, S, 3].

  `seed` is a stateless seed (int32/int64 [2]): the same seed, the same crop and flip.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      seed=crop_seed,
      min_object_covered=0.1,  # Inception; area_range is the binding limit here.
      aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, size)
  image = _resize(image, image_size)
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  image = normalize(image)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_preprocess(image: tf.Tensor, image_size: int,
                    crop_fraction: float = 0.875) -> tf.Tensor:
  """Central crop + resize of a uint8 [H, W, 3] image; float32 [S, S, 3]."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * crop_fraction,
                 tf.int32)
  side = tf.maximum(side, 1)
  top = (height - side + 1) // 2
  left = (width - side + 1) // 2
  image = tf.image.crop_to_bounding_box(image, top, left, side, side)
  image = normalize(_resize(image, image_size))
  return tf.ensure_shape(image, [image_size, image_size, 3])
