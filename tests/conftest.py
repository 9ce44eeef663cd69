"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def shapes_tiny_dir(tmp_path_factory):
  """A data_dir holding the generated `shapes10/tiny` (200 train / 70 test images)."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import data  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = common.data_config("shapes10/tiny", 32)
  config.data_dir = data_dir
  data.get_dataset_info(config)  # Generates it.
  return data_dir
