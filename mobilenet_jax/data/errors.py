"""Exceptions of the input pipeline, each with one readable message.

All are `mobilenet_jax.errors.DataError`s (user errors: command-line tools print the
message alone) and ValueErrors.
"""

from mobilenet_jax.errors import DataError


class DatasetNotFoundError(DataError, ValueError):
  """The dataset is unknown or not prepared in the data directory (we never download)."""


class CorruptImageError(DataError, ValueError):
  """An image file cannot be decoded; the message names the file."""


class SplitNotFoundError(DataError, ValueError):
  """A split name the dataset does not have; the message lists the ones it has."""


class MissingClassError(DataError, ValueError):
  """Some class has no training example (data.classes_without_train_images="error")."""
