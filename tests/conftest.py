"""Shared pytest fixtures."""

import os
import shutil
import tempfile

import pytest

_CACHE_ENV = "MOBILENET_JAX_COMPILE_CACHE"  # mobilenet_jax.runtime.CACHE_ENV
_test_cache_dir = None


def pytest_configure(config):  # pylint: disable=unused-argument
  """The commands that tests start get a throwaway compilation cache, not ~/.cache."""
  global _test_cache_dir
  _test_cache_dir = tempfile.mkdtemp(prefix="mobilenet_jax_test_cache_")
  os.environ[_CACHE_ENV] = _test_cache_dir
  # Build the C++ kernels into it once, now, rather than inside the first training
  # subprocess (where the build would count against that test's timeouts).
  from mobilenet_jax.models.kernels import cpu_kernels  # pylint: disable=g-import-not-at-top
  cpu_kernels.available()
  from mobilenet_jax.data import resize  # pylint: disable=g-import-not-at-top
  resize.available()  # The input pipeline's C++ op, likewise.


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _test_cache_dir:
    shutil.rmtree(_test_cache_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shapes_tiny_dir(tmp_path_factory):
  """A data_dir holding the generated `shapes10/tiny` (200 train / 70 test images)."""
  from mobilenet_jax import config_recipes  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import data  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = config_recipes.data_config("shapes10/tiny", 32)
  config.data_dir = data_dir
  data.get_dataset_info(config)  # Generates it.
  return data_dir


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
  """A JAX compilation cache shared by the training subprocesses of the session."""
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="session")
def trained_tiny_run(shapes_tiny_dir, compile_cache, tmp_path_factory):
  """(workdir, overrides) of a finished, uninterrupted tiny run (see
  `training_runs.resume_overrides`): the reference for exact resume, and a run
  directory for the bad-input tests. Read it; copy it before changing anything."""
  from tests import training_runs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  overrides = training_runs.resume_overrides(shapes_tiny_dir)
  training_runs.run_main(workdir, overrides, compile_cache=compile_cache)
  return workdir, overrides
