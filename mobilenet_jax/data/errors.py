"""Exceptions of the input pipeline, each with one readable message.

Both are `mobilenet_jax.errors.DataError`s (user errors: command-line tools print the
message alone) and ValueErrors.
"""

from mobilenet_jax.errors import DataError


class DatasetNotFoundError(DataError, ValueError):
  """The dataset is unknown or not prepared in the data directory (we never download)."""


class CorruptImageError(DataError, ValueError):
  """An image file cannot be decoded; the message names the file."""
