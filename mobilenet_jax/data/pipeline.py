"""tf.data pipelines: per-process shards, deterministic training order, exact eval.

Training is a deterministic function of (seed, process, step): each epoch reshuffles
this process's share with a seed derived from (seed, process, epoch), and the
augmentation of an example is keyed by (seed, process, epoch, index in epoch) through
stateless ops. Resuming at step k therefore starts at epoch k // steps_per_epoch and
skips the earlier records of that epoch before they are decoded. Only the crop window
of a JPEG is decoded (decode.py), unless data.fused_decode_crop is False or data.cache
holds decoded images.

Evaluation reads each example of the split exactly once over all processes, pads the
last batch (mask 0.0) and gives every process the same number of batches.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from mobilenet_jax import data
from mobilenet_jax.data import decode
from mobilenet_jax.data import preprocessing
from mobilenet_jax.data import sources
from mobilenet_jax.data._tf import tf

_MAX_EPOCHS = 2**31 - 1  # "Forever", as a bounded range the epoch index fits in.


def process_info(process_index=None, process_count=None) -> tuple[int, int]:
  """(index, count) of this process, defaulting to JAX's."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
  return process_index, process_count


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The per-process batch; the global batch must split evenly over processes."""
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"Global batch size {global_batch_size} is not a positive multiple"
                     f" of the process count {process_count}.")
  return global_batch_size // process_count


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # Parallel maps keep their input order.
  options.experimental_optimization.map_parallelization = True
  return options


def _numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a batched dataset as numpy dicts, with readable corrupt-image errors.

  Examples carry "error" (decode.py): the first non-empty one stops the iteration
  with a CorruptImageError naming its file.
  """
  iterator = iter(ds.as_numpy_iterator())
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as error:
      failure = (decode.corrupt_image_error(error)
                 or decode.undecodable_jpeg_error(error) or error)
    else:
      failure = decode.first_error(batch.pop("error"))
      if failure is None:
        yield batch
        continue
    # Raised with neither the TF error's traceback nor the iterator: kept alive by
    # them, the iterator would be destroyed at interpreter shutdown, where its
    # destructor can wait forever on its prefetch threads (a corrupt eval image used
    # to hang the process at exit that way). Deleted here, it ends them now.
    del iterator
    raise failure.with_traceback(None)


def _corrupt_kept_or_dropped(ds: tf.data.Dataset, on_corrupt: str) -> tf.data.Dataset:
  """Drops unreadable examples in "skip" mode; in "error" mode they go on (a 1x1
  image and the message) to `_numpy_batches`, which raises."""
  if on_corrupt == "skip":
    return ds.filter(lambda ex: tf.equal(ex["error"], ""))
  return ds


def _fold(seed: tf.Tensor, value) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))


def _train_preprocess_fn(data_config, source, decoded):
  """(example seed, record) -> {"image", "label", "error"}: the training crop, resize
  and flip. Inception-style crops decode only the crop window of a JPEG (unless
  `data.fused_decode_crop` is off or the decoded images are cached); small images
  (`data.train_crop="pad"`, configs/small_images.py) are padded, then cropped."""
  on_corrupt = data_config.on_corrupt_image
  pad = data_config.get("train_crop", "inception") == "pad"
  fused = data_config.get("fused_decode_crop", True) and not data_config.cache

  def preprocess(example_seed, record):
    label = tf.cast(record["label"], tf.int32)
    if pad:
      example = record if data_config.cache else decoded(record)
      image = preprocessing.pad_crop_preprocess(
          example["image"], example_seed, data_config.image_size,
          pad_fraction=data_config.pad_fraction, random_flip=data_config.random_flip)
      return {"image": image, "label": label, "error": example["error"]}
    crop_seed, flip_seed = preprocessing.split_seed(example_seed)
    window = functools.partial(preprocessing.crop_window, crop_seed=crop_seed,
                               area_range=data_config.crop_area_range,
                               aspect_range=data_config.crop_aspect_range)
    if fused:  # Decodes only the crop of a JPEG.
      crop, error = source.decode_and_crop(record, on_corrupt, window)
    else:
      example = record if data_config.cache else decoded(record)
      begin, size = window(tf.shape(example["image"]))
      crop, error = tf.slice(example["image"], begin, size), example["error"]
    image = preprocessing.finish_train_crop(crop, flip_seed, data_config.image_size,
                                            data_config.random_flip)
    return {"image": image, "label": label, "error": error}

  return preprocess


def train_dataset(data_config, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index=None, process_count=None) -> tf.data.Dataset:
  """The infinite, batched training dataset of this process (see module doc)."""
  index, count = process_info(process_index, process_count)
  batch = local_batch_size(global_batch_size, count)
  source = sources.get_source(data_config)
  split = source.resolve_split(data_config.train_split)
  # Equal shares (remainder dropped) give every process the same steps per epoch.
  local_split = tfds.split_for_jax_process(split, process_index=index,
                                           process_count=count, drop_remainder=True)
  num_local = source.num_examples(local_split)
  # Import here: the package imports this module lazily.
  from mobilenet_jax.data import steps_per_epoch as epoch_steps  # pylint: disable=g-import-not-at-top
  steps_per_epoch = epoch_steps(source.num_examples(split), global_batch_size)
  if steps_per_epoch == 0:
    raise ValueError(f"Split {split!r} gives {num_local} examples per process, fewer "
                     f"than one batch of {batch}.")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  first_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  first_offset = step_in_epoch * batch
  on_corrupt = data_config.on_corrupt_image
  base_seed = _fold(tf.constant([seed, 0], tf.int64), index)

  def decoded(record):
    image, error = source.decode(record, on_corrupt)
    return {"image": image, "label": record["label"], "error": error}

  records = source.records(local_split)
  if data_config.cache:
    # Decoded images in memory: for small datasets only.
    records = records.map(decoded, num_parallel_calls=tf.data.AUTOTUNE).cache()
  buffer = max(1, min(int(data_config.shuffle_buffer), num_local))

  def epoch(epoch_index):
    epoch_seed = _fold(base_seed, epoch_index)
    shuffle_seed = tf.random.stateless_uniform([], epoch_seed, minval=None,
                                               maxval=None, dtype=tf.int64)
    ds = records.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    # The epoch's examples: whole batches only, the leftover dropped. Taking them
    # before the resume skip keeps a resumed epoch the same length as the original
    # (skipping first would let the leftover in and shift every later batch).
    ds = ds.enumerate().take(steps_per_epoch * batch)
    # Resume: skip the examples of the first epoch that were already consumed; only
    # undecoded records are read (unless cached).
    ds = ds.skip(tf.where(epoch_index == first_epoch, tf.constant(first_offset, tf.int64),
                         tf.constant(0, tf.int64)))
    return ds.map(lambda i, r: (_fold(epoch_seed, i), r))

  preprocess = _train_preprocess_fn(data_config, source, decoded)
  ds = tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(epoch)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = _corrupt_kept_or_dropped(ds, on_corrupt)
  ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())


def eval_dataset(data_config, global_batch_size: int, split: str | None = None,
                 process_index=None, process_count=None) -> tf.data.Dataset:
  """One padded pass over this process's share of the eval split (see module doc)."""
  index, count = process_info(process_index, process_count)
  batch = local_batch_size(global_batch_size, count)
  source = sources.get_source(data_config)
  split = source.resolve_split(split or data_config.eval_split)
  total = source.num_examples(split)
  # Shares differ by at most one example; every process runs the largest share's
  # batch count, so that collectives in the eval step never wait on a finished host.
  num_batches = math.ceil(math.ceil(total / count) / batch)
  local_split = tfds.split_for_jax_process(split, process_index=index,
                                           process_count=count, drop_remainder=False)
  size = data_config.image_size

  def preprocess(record):
    image, error = source.decode(record, data_config.on_corrupt_image)
    image = preprocessing.eval_preprocess(image, size, data_config.eval_crop_fraction)
    return {"image": image, "label": tf.cast(record["label"], tf.int32),
            "mask": tf.constant(1.0, tf.float32), "error": error}

  ds = source.records(local_split).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = _corrupt_kept_or_dropped(ds, data_config.on_corrupt_image)
  # No `data.cache` here: every evaluation builds this dataset anew, so a cache would
  # never be read back (and TF warns when `take` leaves one partly filled).
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([size, size, 3], tf.float32),
      "label": tf.constant(0, tf.int32),
      "mask": tf.constant(0.0, tf.float32), "error": tf.constant("")}).repeat()
  ds = ds.concatenate(padding).take(num_batches * batch)
  ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())


def train_batches(data_config, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index=None, process_count=None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite numpy batches {'image', 'label'} of this process; see `train_dataset`."""
  return _numpy_batches(train_dataset(data_config, global_batch_size, seed, start_step,
                                      process_index, process_count))


def eval_batches(data_config, global_batch_size: int, split: str | None = None,
                 process_index=None, process_count=None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass of numpy batches {'image', 'label', 'mask'}; see `eval_dataset`."""
  return _numpy_batches(eval_dataset(data_config, global_batch_size, split,
                                     process_index, process_count))


def read_image_file(path: str) -> np.ndarray:
  """One image file decoded to RGB uint8 [H, W, 3]."""
  exists = tf.io.gfile.exists(path)
  problem = data.image_path_problem(path, exists, exists and tf.io.gfile.isdir(path))
  if problem:
    raise FileNotFoundError(problem)
  with tf.io.gfile.GFile(path, "rb") as f:
    encoded = f.read()
  return decode.decode_with_pil(encoded, path)


def load_image_file(path: str, data_config) -> np.ndarray:
  """Eval preprocessing of one image file: float32 [S, S, 3] in [-1, 1]."""
  image = preprocessing.eval_preprocess(tf.constant(read_image_file(path)),
                                        data_config.image_size,
                                        data_config.eval_crop_fraction)
  return image.numpy()
