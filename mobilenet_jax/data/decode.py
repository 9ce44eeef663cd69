"""Image decoding to RGB uint8, whatever the file: JPEG (incl. CMYK), PNG, grey, RGBA.

Two paths:
- `decode_fast`, for prepared TFDS datasets (TFDS validated the images when it built
  them): TensorFlow's native decoders, with PIL only for formats TF cannot read.
- `decode_checked`, for folders of image files, where unreadable files do occur: PIL
  in a `tf.numpy_function` (PIL releases the GIL while decoding), so a failure is
  caught per file. It never fails inside TensorFlow (whose log would print a
  traceback): it returns the message naming the file as data, and the pipeline
  raises it as a CorruptImageError when the batch reaches Python
  (`first_error`), or drops the example with a warning. Files are read in
  Python too (`read_file`), so that a file the operating system cannot read (a
  dangling link, a link loop, a file deleted during the run) is reported alike.

Training decodes only its crop where it can (`decode_and_crop_fast`,
`decode_and_crop_checked`): the crop window is sampled on the JPEG's encoded shape
and `tf.image.decode_and_crop_jpeg` decodes just that window, as the flax ImageNet
example does. The window is the one the full decode would have been cropped to (the
same seed, the same shape). Other formats, CMYK JPEGs and, in folders, any file whose
header PIL does not read as a complete 8-bit RGB or grey JPEG take the paths above.
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
# What an unreadable file in a training or evaluation split should make the user do.
_PIPELINE_FIX = ("Replace or delete the file, or set data.on_corrupt_image=skip to skip "
                 "unreadable images.")


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


def _as_bytes(value) -> bytes:
  # Eager numpy_function calls pass 0-d arrays (of str for a Python str argument);
  # tf.data passes bytes.
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.encode() if isinstance(value, str) else bytes(value)


def _as_str(value) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pil_decode_np(data, name) -> np.ndarray:
  return decode_with_pil(_as_bytes(data), _as_str(name))


def _pil_decode_or_message_np(data, name, on_corrupt, read_error):
  """(image, "") or, for a file that cannot be read or decoded, (1x1 black, message)."""
  try:
    if _as_bytes(read_error):
      raise CorruptImageError(_as_str(read_error))
    return decode_with_pil(_as_bytes(data), _as_str(name)), np.array(b"", object)
  except CorruptImageError as e:
    if _as_str(on_corrupt) == "skip":
      logging.warning("Skipping corrupt image (on_corrupt_image='skip'): %s", e)
    message = f"{str(e).rstrip('.')}. {_PIPELINE_FIX}"
    return np.zeros((1, 1, 3), np.uint8), np.array(message.encode(), object)


def _read_np(path):
  name = _as_str(path)
  try:
    if "://" in name:  # gs://... and other file systems TensorFlow knows.
      with tf.io.gfile.GFile(name, "rb") as f:
        data = f.read()
    else:
      with open(name, "rb") as f:
        data = f.read()
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
    message = f"Cannot read image file {name!r}: {type(e).__name__}: {reason}"
    return np.array(b"", object), np.array(message.encode(), object)
  # Object arrays: numpy's bytes dtype would drop trailing NUL bytes.
  return np.array(data, object), np.array(b"", object)


def read_file(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(contents, error message) of one file; the message is "" when it was read.

  Never fails the pipeline: `decode_checked` passes the message on.
  """
  data, error = tf.numpy_function(_read_np, [path], (tf.string, tf.string),
                                  stateful=False)
  return tf.ensure_shape(data, []), tf.ensure_shape(error, [])


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


def decode_checked(data: tf.Tensor, name: tf.Tensor, on_corrupt: str,
                   read_error: tf.Tensor | str = "") -> tuple[tf.Tensor, tf.Tensor]:
  """Graph-mode decode with a per-file check: returns (RGB uint8 image, error).

  `error` is "" for a good file; else a one-line message naming the file and the
  fix (the image is then 1x1 black). With on_corrupt="skip" a warning names the file
  too. A non-empty `read_error` (from `read_file`) is such a failure.
  """
  if on_corrupt not in ON_CORRUPT_MODES:
    raise ValueError(
        f"data.on_corrupt_image must be one of {ON_CORRUPT_MODES}, got {on_corrupt!r}.")
  image, error = tf.numpy_function(
      _pil_decode_or_message_np, [data, name, on_corrupt, read_error],
      (tf.uint8, tf.string), stateful=False)
  return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(error, [])


def _crop_window(window, shape: tf.Tensor) -> tf.Tensor:
  """`window(shape)`'s (begin, size) as decode_and_crop_jpeg's [y, x, height, width]."""
  begin, size = window(shape)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _decode_then_crop(image: tf.Tensor, window) -> tf.Tensor:
  begin, size = window(tf.shape(image))
  return tf.slice(image, begin, size)


def decode_and_crop_fast(data: tf.Tensor, name: tf.Tensor, window) -> tf.Tensor:
  """`decode_fast`, then the crop `window(shape)` gives ((begin, size) as for tf.slice);
  for RGB and grey JPEGs, only that window is decoded (TFDS datasets)."""
  is_jpeg = tf.io.is_jpeg(data)
  shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(data),
                  lambda: tf.zeros([3], tf.int32))
  fusable = is_jpeg & ((shape[2] == 1) | (shape[2] == 3))  # Not CMYK.

  def fused():
    shape_rgb = tf.stack([shape[0], shape[1], 3])
    return tf.image.decode_and_crop_jpeg(data, _crop_window(window, shape_rgb),
                                         channels=3)

  image = tf.cond(fusable, fused,
                  lambda: _decode_then_crop(decode_fast(data, name), window))
  return tf.ensure_shape(image, [None, None, 3])


def _probe_jpeg_np(data, read_error):
  """(whether TF can decode just a window of it, height, width) of a file's bytes."""
  no = False, np.int32(0), np.int32(0)
  data, read_error = _as_bytes(data), _as_bytes(read_error)
  # A JPEG cut short has no end marker: PIL's decode then names it.
  if read_error or not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
    return no
  try:
    with Image.open(io.BytesIO(data)) as image:  # Reads the header only.
      if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return no
      width, height = image.size
  except Exception:  # pylint: disable=broad-except  # Then PIL's decode reports it.
    return no
  return True, np.int32(height), np.int32(width)


def decode_and_crop_checked(data: tf.Tensor, name: tf.Tensor, on_corrupt: str,
                            read_error: tf.Tensor | str, window
                            ) -> tuple[tf.Tensor, tf.Tensor]:
  """`decode_checked`, then the crop `window(shape)` gives; returns (crop, error).

  Files whose header PIL reads as an 8-bit RGB or grey JPEG with its end marker have
  only the window decoded, by TensorFlow; any other file, and so every unreadable
  one, takes `decode_checked` and its per-file report.
  """
  fusable, height, width = tf.numpy_function(
      _probe_jpeg_np, [data, read_error], (tf.bool, tf.int32, tf.int32), stateful=False)
  fusable = tf.ensure_shape(fusable, [])

  def fused():
    shape = tf.stack([tf.ensure_shape(height, []), tf.ensure_shape(width, []), 3])
    image = tf.image.decode_and_crop_jpeg(data, _crop_window(window, shape), channels=3)
    return image, tf.constant("")

  def checked():
    image, error = decode_checked(data, name, on_corrupt, read_error)
    return _decode_then_crop(image, window), error

  image, error = tf.cond(fusable, fused, checked)
  return tf.ensure_shape(image, [None, None, 3]), error


def first_error(errors) -> CorruptImageError | None:
  """A CorruptImageError with the first non-empty message of a batch's "error", or
  None if every example decoded."""
  for error in np.asarray(errors).reshape(-1):
    if error:
      return CorruptImageError(_as_str(error))
  return None


def corrupt_image_error(error: tf.errors.OpError) -> CorruptImageError | None:
  """The CorruptImageError a TF error from inside tf.data stands for, or None.

  TensorFlow wraps Python exceptions from `numpy_function` in an OpError whose text
  holds the traceback; this keeps one readable message naming the file. (Only the
  PIL fallback of `decode_fast`, for prepared datasets, still raises there.)
  """
  marker = CorruptImageError.__name__ + ": "
  for line in str(error.message).splitlines():
    if marker in line:
      return CorruptImageError(line.split(marker, 1)[1].strip())
  return None


def undecodable_jpeg_error(error: tf.errors.OpError) -> CorruptImageError | None:
  """The CorruptImageError for TensorFlow's JPEG decoder failing inside tf.data, or None.

  Files that reach TF's decoder passed PIL's header check (folders) or TFDS's (prepared
  datasets), so this is rare; TF does not say which file it was.
  """
  if "jpeg::Uncompress failed" not in str(error.message):
    return None
  return CorruptImageError(
      "TensorFlow's JPEG decoder rejected an image of the split (it does not say "
      "which). Run again with --config.data.fused_decode_crop=False: every file is "
      "then decoded by the per-file check, which names it (data.on_corrupt_image=skip "
      "skips it).")
