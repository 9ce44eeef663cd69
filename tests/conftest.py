"""Shared pytest fixtures."""

import contextlib
import fcntl
import os
import shutil
import tempfile

import pytest

_CACHE_ENV = "MOBILENET_JAX_COMPILE_CACHE"  # mobilenet_jax.runtime.CACHE_ENV
# The first pytest process makes one scratch directory for the session and its xdist
# workers inherit it: one compilation cache (kernels built once, programs compiled by
# one worker reused by the other) and the session fixtures below, built once.
_SHARED_ENV = "MOBILENET_JAX_TEST_SESSION_DIR"
_owned_dir = None

# Test files whose tests take longest (measured, `--durations`), started first: with
# two workers the last file to start sets the suite's end, so it must be a short one.
_LONG_FILES = ("test_resume.py", "test_bad_inputs.py", "test_sweep_end_to_end.py",
               "test_training.py", "test_faults_end_to_end.py", "test_evaluate_predict.py",
               "test_digits.py", "test_interop.py", "test_export.py",
               "test_data_benchmark.py")


def pytest_configure(config):
  """The commands that tests start get a throwaway compilation cache, not ~/.cache."""
  global _owned_dir
  if _SHARED_ENV not in os.environ:
    _owned_dir = tempfile.mkdtemp(prefix="mobilenet_jax_tests_")
    os.environ[_SHARED_ENV] = _owned_dir
  os.environ[_CACHE_ENV] = os.path.join(os.environ[_SHARED_ENV], "compile_cache")
  # Build the C++ kernels into it once, now (before the workers start), rather than
  # inside the first training subprocess (where the build would count against that
  # test's timeouts).
  from mobilenet_jax.models.kernels import cpu_kernels  # pylint: disable=g-import-not-at-top
  cpu_kernels.available()
  from mobilenet_jax.data import resize  # pylint: disable=g-import-not-at-top
  resize.available()  # The input pipeline's C++ op, likewise.
  # xdist's loadfile hands out files with the most tests first; ours, in the order below.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  """Runs the long files first (a stable sort: the rest keep their order)."""
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return _LONG_FILES.index(name) if name in _LONG_FILES else len(_LONG_FILES)
  items.sort(key=rank)


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _owned_dir:
    shutil.rmtree(_owned_dir, ignore_errors=True)


@contextlib.contextmanager
def _built_once(name: str):
  """Yields (path, build): `build` is True in the one process that must make `path`;
  the others wait for it and reuse it. A failed build is retried by the next process."""
  path = os.path.join(os.environ[_SHARED_ENV], name)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = os.path.exists(path + ".done")
    if not done:
      shutil.rmtree(path, ignore_errors=True)
      os.makedirs(path)
    yield path, not done
    open(path + ".done", "w").close()


@pytest.fixture(scope="session")
def shapes_tiny_dir():
  """A data_dir holding the generated `shapes10/tiny` (200 train / 70 test images)."""
  from mobilenet_jax import config_recipes  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import data  # pylint: disable=g-import-not-at-top
  with _built_once("tfds") as (data_dir, build):
    if build:
      config = config_recipes.data_config("shapes10/tiny", 32)
      config.data_dir = data_dir
      data.get_dataset_info(config)  # Generates it.
  return data_dir


@pytest.fixture(scope="session")
def compile_cache():
  """The session's compilation cache, for training subprocesses that cache every
  program, however fast it compiles (`training_runs.env_with_devices`)."""
  return os.environ[_CACHE_ENV]


@pytest.fixture(scope="session")
def trained_tiny_run(shapes_tiny_dir, compile_cache):
  """(workdir, overrides) of a finished, uninterrupted tiny run (see
  `training_runs.resume_overrides`): the reference for exact resume, and a run
  directory for the bad-input tests. Read it; copy it before changing anything."""
  from tests import training_runs  # pylint: disable=g-import-not-at-top
  overrides = training_runs.resume_overrides(shapes_tiny_dir)
  with _built_once("trained") as (root, build):
    workdir = os.path.join(root, "run")
    if build:
      training_runs.run_main(workdir, overrides, compile_cache=compile_cache)
  return workdir, overrides
