"""The input pipeline: TFDS datasets, image folders and the built-in `shapes10`.

    info = data.get_dataset_info(config.data)
    for batch in data.train_batches(config.data, global_batch_size, seed, start_step):
      ...  # {'image': float32 [B/P, S, S, 3] in [-1, 1], 'label': int32 [B/P]}
    for batch in data.eval_batches(config.data, eval_batch_size):
      ...  # plus 'mask': float32, 0.0 on padding

`config.data` is the section built by `config_recipes.data_config`. TensorFlow (used
for tf.data only, hidden from GPUs/TPUs) is imported on first use, so importing this
package stays cheap; the first call also registers the `shapes10` TFDS builder (for
the TFDS CLI: `--imports=mobilenet_jax.data.builtin_shapes`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Iterator

import numpy as np

from mobilenet_jax.data.errors import CorruptImageError
from mobilenet_jax.data.errors import DatasetNotFoundError
from mobilenet_jax.data.errors import MissingClassError
from mobilenet_jax.data.errors import SplitNotFoundError

__all__ = [
    "CorruptImageError", "DatasetInfo", "DatasetNotFoundError", "MissingClassError",
    "SplitNotFoundError", "check_image_paths", "eval_batches", "get_dataset_info",
    "image_path_problem", "load_image_file", "read_image_file", "resolve_split",
    "steps_per_epoch", "train_batches", "MISSING_CLASS_MODES", "ON_CORRUPT_MODES",
    "TRAIN_CROPS"]

# data.on_corrupt_image: stop on an unreadable image file, or drop it with a warning.
ON_CORRUPT_MODES = ("error", "skip")
# data.classes_without_train_images: a class with no training image (e.g. only in
# val/ of an image folder) is warned about, or stops the run.
MISSING_CLASS_MODES = ("warn", "error")
# data.train_crop: Inception-style crops (the paper's), or pad and crop (small images;
# preprocessing.pad_crop_preprocess). Configs without the key use "inception".
TRAIN_CROPS = ("inception", "pad")


def steps_per_epoch(num_train_examples: int, global_batch_size: int) -> int:
  """Whole global batches in one epoch: floor(N / B), the one place this is computed.

  Every process reads an equal share, floor(N / P) examples, in local batches of
  B / P, so each sees floor(floor(N / P) / (B / P)) = floor(N / B) batches: the
  trainer's epoch and the pipeline's (which resumes mid-epoch with it) agree.
  """
  return num_train_examples // global_batch_size


def _pipeline():
  # Lazy: tensorflow and tensorflow_datasets take seconds to import.
  return importlib.import_module("mobilenet_jax.data.pipeline")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the training loop need to know about a dataset."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int  # Of data.train_split, all processes together.
  num_eval_examples: int  # Of data.eval_split.


def get_dataset_info(data_config) -> DatasetInfo:
  """Classes and split sizes; prepares shapes10 if needed, never downloads.

  Warns (or raises MissingClassError, per data.classes_without_train_images) if some
  class has no example in the train split, where the source can tell cheaply.
  """
  sources = _pipeline().sources
  source = sources.get_source(data_config)
  sources.check_train_classes(source, data_config)
  return DatasetInfo(
      num_classes=len(source.class_names),
      class_names=tuple(source.class_names),
      num_train_examples=source.num_examples(
          source.resolve_split(data_config.train_split)),
      num_eval_examples=source.num_examples(
          source.resolve_split(data_config.eval_split)))


def resolve_split(data_config, split: str) -> str:
  """The split `split` names in this dataset ("validation" may become "val" or
  "test" where it is absent)."""
  return _pipeline().sources.get_source(data_config).resolve_split(split)


def train_batches(data_config, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index=None, process_count=None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite training batches of this process's share of each global batch.

  Yields {'image': float32 [global_batch_size / process_count, S, S, 3] in [-1, 1],
  'label': int32 [...]}. Deterministic in (seed, process): starting at `start_step`
  gives exactly the batches a run from 0 yields after `start_step` batches, without
  decoding the skipped ones. process_index/process_count default to JAX's.
  """
  return _pipeline().train_batches(data_config, global_batch_size, seed, start_step,
                                   process_index, process_count)


def eval_batches(data_config, global_batch_size: int, split: str | None = None,
                 process_index=None, process_count=None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `split` (default data.eval_split), each example exactly once.

  Yields {'image', 'label', 'mask': float32 (0.0 on padding)}. Every process yields
  the same number of batches; the masks of all processes sum to the split size.
  """
  return _pipeline().eval_batches(data_config, global_batch_size, split,
                                  process_index, process_count)


def image_path_problem(path: str, exists: bool, is_dir: bool) -> str | None:
  """What is wrong with `path` as an image file to read, or None."""
  if not exists:
    return f"Image file not found: {path!r}"
  if is_dir:
    return (f"{path!r} is a directory, not an image file: name the image files, e.g. "
            f"{path.rstrip('/')}/*.jpg")
  return None


def check_image_paths(paths: list[str]) -> None:
  """FileNotFoundError for the first local path that is missing or a directory.

  Cheap (no TensorFlow): tools call it before restoring a model, so a mistyped file
  name is said in a second. Remote paths (gs://...) are checked when they are read.
  """
  for path in paths:
    if "://" not in path:
      problem = image_path_problem(path, os.path.exists(path), os.path.isdir(path))
      if problem:
        raise FileNotFoundError(problem)


def read_image_file(path: str) -> np.ndarray:
  """One image file decoded to RGB uint8 [H, W, 3] (grey, palette, RGBA, CMYK...).

  Raises FileNotFoundError, or CorruptImageError naming the file.
  """
  return _pipeline().read_image_file(path)


def load_image_file(path: str, data_config) -> np.ndarray:
  """Eval preprocessing of one image file: float32 [S, S, 3] in [-1, 1].

  Raises FileNotFoundError, or CorruptImageError naming the file if it is not a
  readable image.
  """
  return _pipeline().load_image_file(path, data_config)
