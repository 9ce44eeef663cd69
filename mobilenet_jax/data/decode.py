"""Image decoding to RGB uint8, whatever the file: JPEG (incl. CMYK), PNG, grey, RGBA.

Two paths:
- `decode_fast`, for prepared TFDS datasets (TFDS validated the images when it built
  them): TensorFlow's native decoders, with PIL only for formats TF cannot read.
- `decode_checked`, for folders of image files, where unreadable files do occur: PIL
  in a `tf.numpy_function` (PIL releases the GIL while decoding), so a failure is
  caught per file and reported by name, then stops the run or drops the example.
"""

from __future__ import annotations

import io

from absl import logging
import numpy as np
from PIL import Image

from mobilenet_jax.data import ON_CORRUPT_MODES
from mobilenet_jax.data._tf import tf
from mobilenet_jax.data.errors import CorruptImageError

# PIL modes of more than 8 bits per pixel, which convert("RGB") would clip at 255.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_with_pil(data: bytes, name: str) -> np.ndarray:
  """Decodes encoded image bytes to RGB uint8 [H, W, 3]; CorruptImageError if not."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes fully now, so truncated files fail here.
      if image.mode in _WIDE_MODES:
        rgb = _wide_grey_to_rgb(np.asarray(image))
      else:
        # convert("RGB") maps grey, palette, RGBA (alpha dropped, as TF's
        # channels=3 does) and CMYK (incl. Adobe's inverted CMYK JPEGs) to RGB.
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
  except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...).
    raise CorruptImageError(
        f"Cannot decode image file {name!r}: {type(e).__name__}: {e}".replace("\n", " ")
    ) from None
  if rgb.size == 0:
    raise CorruptImageError(f"Cannot decode image file {name!r}: empty image")
  return rgb


def _wide_grey_to_rgb(grey: np.ndarray) -> np.ndarray:
  """16-bit greyscale (PIL "I;16"/"I") scaled to 8 bits, 65535 -> 255, as RGB.

  PIL's convert("RGB") clips such images at 255, so a typical 16-bit scan would come
  out almost all white. 32-bit "I" images hold 16-bit PNGs in PIL; values beyond
  16 bits are clipped.
  """
  grey = np.clip(grey.astype(np.float64), 0, 65535)
  eight = np.round(grey * (255.0 / 65535.0)).astype(np.uint8)
  return np.repeat(eight[..., None], 3, axis=-1)


def _as_str(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pil_decode_np(data, name) -> np.ndarray:
  return decode_with_pil(bytes(data), _as_str(name))


def _pil_decode_or_flag_np(data, name, on_corrupt):
  try:
    return decode_with_pil(bytes(data), _as_str(name)), True
  except CorruptImageError as e:
    if _as_str(on_corrupt) != "skip":
      raise
    logging.warning("Skipping corrupt image (on_corrupt_image='skip'): %s", e)
    return np.zeros((1, 1, 3), np.uint8), False


def _has_prefix(data: tf.Tensor, prefix: bytes) -> tf.Tensor:
  return tf.equal(tf.strings.substr(data, 0, len(prefix)), prefix)


def decode_fast(data: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
  """Graph-mode decode of encoded bytes to RGB uint8 [H, W, 3] (TFDS datasets)."""
  native = (tf.io.is_jpeg(data) | _has_prefix(data, b"\x89PNG")
            | _has_prefix(data, b"GIF8") | _has_prefix(data, b"BM"))

  def with_tf():
    return tf.io.decode_image(data, channels=3, expand_animations=False)

  def with_pil():  # WebP, TIFF, ... stored as-is by some datasets.
    return tf.numpy_function(_pil_decode_np, [data, name], tf.uint8, stateful=False)

  image = tf.cond(native, with_tf, with_pil)
  return tf.ensure_shape(image, [None, None, 3])


def decode_checked(data: tf.Tensor, name: tf.Tensor,
                   on_corrupt: str) -> tuple[tf.Tensor, tf.Tensor]:
  """Graph-mode decode with a per-file check: returns (RGB uint8 image, ok).

  on_corrupt="error" fails the pipeline with a CorruptImageError naming the file
  (see `corrupt_image_error`); "skip" logs a warning naming it and returns ok=False.
  """
  if on_corrupt not in ON_CORRUPT_MODES:
    raise ValueError(
        f"data.on_corrupt_image must be one of {ON_CORRUPT_MODES}, got {on_corrupt!r}.")
  image, ok = tf.numpy_function(
      _pil_decode_or_flag_np, [data, name, on_corrupt], (tf.uint8, tf.bool),
      stateful=False)
  return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(ok, [])


def corrupt_image_error(error: tf.errors.OpError) -> CorruptImageError | None:
  """The CorruptImageError a TF error from inside tf.data stands for, or None.

  TensorFlow wraps Python exceptions from `numpy_function` in an OpError whose text
  holds the traceback; this keeps one readable message naming the file.
  """
  marker = CorruptImageError.__name__ + ": "
  for line in str(error.message).splitlines():
    if marker in line:
      return CorruptImageError(line.split(marker, 1)[1].strip())
  return None
