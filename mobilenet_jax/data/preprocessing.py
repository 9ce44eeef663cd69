"""Paper-faithful preprocessing (TF-slim's inception_preprocessing, pixels in [-1, 1]),
with stateless randomness.

Train: Inception-style random crop (random area and aspect ratio), resize, random
horizontal flip; or, for small images (data.train_crop="pad", configs/small_images.py),
resize, pad and a random crop of the original size: a shift of at most
data.pad_fraction of the side, never a zoom, which suits 28-64 px objects that fill
the frame (the Inception crops cost Fashion-MNIST about 5 points, issue 18). Eval: resize so that the shorter side is image_size / crop_fraction
(0.875), then crop the centre. Pixels go to [-1, 1] (x / 127.5 - 1), as TF-slim and
Keras MobileNets expect.
"""

from __future__ import annotations

from mobilenet_jax.data import resize
from mobilenet_jax.data._tf import tf


_DIVISOR, _OFFSET = 127.5, -1.0  # [0, 255] to [-1, 1], as `normalize`.


def normalize(image: tf.Tensor) -> tf.Tensor:
  """uint8 (or float in [0, 255]) pixels to float32 in [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def split_seed(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(crop seed, flip seed) of an example's stateless seed."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  return crop_seed, flip_seed


def crop_window(shape: tf.Tensor, crop_seed: tf.Tensor, area_range=(0.25, 1.0),
                aspect_range=(3 / 4, 4 / 3)) -> tuple[tf.Tensor, tf.Tensor]:
  """(begin, size), as for tf.slice, of the random crop of an image of `shape`.

  Inception-style: a random area fraction and aspect ratio. Only the height and width
  of `shape` ([H, W, C]) count, so a JPEG's encoded shape gives the window its full
  decode would get: the same seed, the same window.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      seed=crop_seed,
      min_object_covered=0.1,  # Inception; area_range is the binding limit here.
      aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def finish_train_crop(crop: tf.Tensor, flip_seed: tf.Tensor, image_size: int,
                      random_flip: bool = True) -> tf.Tensor:
  """Resize + flip of a uint8 crop; float32 [S, S, 3] in [-1, 1].

  The flip is tf.image.stateless_random_flip_left_right's draw, done in the resize.
  """
  flip = False
  if random_flip:
    flip = tf.random.stateless_uniform([], flip_seed, minval=0, maxval=1.0) < 0.5
  # Antialiasing matters when shrinking (ImageNet photos, 64px shapes to 32px).
  image = resize.resize_antialiased(crop, [image_size, image_size], flip=flip,
                                    divisor=_DIVISOR, offset=_OFFSET)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def train_preprocess(image: tf.Tensor, seed: tf.Tensor, image_size: int,
                     area_range=(0.25, 1.0), aspect_range=(3 / 4, 4 / 3),
                     random_flip: bool = True) -> tf.Tensor:
  """Random crop + resize + flip of a uint8 [H, W, 3] image; float32 [S, S, 3].

  `seed` is a stateless seed (int32/int64 [2]): the same seed, the same crop and flip.
  The pipeline's fused path (decode.decode_and_crop_*) gives the same crop with
  `crop_window` and `finish_train_crop`.
  """
  crop_seed, flip_seed = split_seed(seed)
  begin, size = crop_window(tf.shape(image), crop_seed, area_range, aspect_range)
  return finish_train_crop(tf.slice(image, begin, size), flip_seed, image_size,
                           random_flip)


def pad_crop_preprocess(image: tf.Tensor, seed: tf.Tensor, image_size: int,
                        pad_fraction: float = 0.125, random_flip: bool = True
                        ) -> tf.Tensor:
  """Resize to S x S, zero-pad by `pad_fraction` x S on each side, random S x S crop,
  flip; float32 [S, S, 3]. (CIFAR's 4 px at 32 px is pad_fraction 0.125.)"""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  # Antialiasing matters when shrinking; TF's op here: small images are cheap.
  image = tf.clip_by_value(tf.image.resize(image, [image_size, image_size],
                                           method="bilinear", antialias=True), 0.0, 255.0)
  pad = int(round(pad_fraction * image_size))
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])  # Black, as the border.
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                         seed=crop_seed)
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  image = normalize(image)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_preprocess(image: tf.Tensor, image_size: int,
                    crop_fraction: float = 0.875) -> tf.Tensor:
  """Resize, then central crop, of a uint8 [H, W, 3] image; float32 [S, S, 3].

  The image is resized (aspect kept) so that its shorter side is S / crop_fraction,
  then the central S x S is cut: the crop covers `crop_fraction` of the shorter side
  (TF-slim's eval preprocessing, central_fraction=0.875). Resizing first matters for
  small images: cropping first rounds the crop to whole source pixels and its offset up, so an 8x8 digit
  lost its top row and left column (a 7x7 crop at (1, 1)), a view training rarely
  shows (TF's crop sampler keeps offset 0 at such sizes); that cost 25-35 points of
  top-1 on scikit-learn's digits. Here the crop is exactly central.
  On large images (ImageNet) both orders give the same pixels up to rounding.
  """
  shape = tf.shape(image)
  height = tf.cast(shape[0], tf.float32)
  width = tf.cast(shape[1], tf.float32)
  scale = image_size / (crop_fraction * tf.minimum(height, width))

  def resized(length):
    # Rounded so that the margin around the crop is even: the crop is then exactly
    # central (at most one pixel of fraction lost: 36 instead of 36.57 for 32).
    margin = tf.cast(tf.round((length * scale - image_size) / 2), tf.int32)
    return image_size + 2 * tf.maximum(margin, 0)

  new_height, new_width = resized(height), resized(width)
  image = resize.resize_antialiased(image, tf.stack([new_height, new_width]),
                                    divisor=_DIVISOR, offset=_OFFSET)
  image = tf.image.crop_to_bounding_box(image, (new_height - image_size) // 2,
                                        (new_width - image_size) // 2, image_size,
                                        image_size)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_images(images, image_size: int, crop_fraction: float = 0.875):
  """The eval transform on numpy images: float32 [N, S, S, 3] in [-1, 1].

  `images`: one uint8 image [H, W, 3] (or [H, W] grey), a batch [N, H, W, 3], or a
  list of images of any sizes. Float inputs are taken as pixels in [0, 255].
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(images, np.ndarray) and images.ndim == 4:
    images = list(images)
  elif not isinstance(images, (list, tuple)):
    images = [images]
  out = []
  for image in images:
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
      raise ValueError(f"Expected images of shape [H, W, 3] (or grey [H, W]), got "
                       f"{image.shape}.")
    image = np.broadcast_to(image[..., :3], image.shape[:2] + (3,))
    out.append(eval_preprocess(tf.constant(image), image_size, crop_fraction).numpy())
  return np.stack(out)
