"""The built-in shapes10 dataset: offline, deterministic, balanced."""

import collections

import numpy as np
import tensorflow_datasets as tfds

from mobilenet_jax.data import builtin_shapes
from mobilenet_jax.data import shapes_render


def _records(data_dir, split):
  builder = tfds.builder("shapes10/tiny", data_dir=data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  return [(ex["image"], int(ex["label"])) for ex in tfds.as_numpy(ds)]


def test_generated_offline_and_balanced(shapes_tiny_dir):
  builder = tfds.builder("shapes10/tiny", data_dir=shapes_tiny_dir)
  assert builder.is_prepared()
  assert builder.info.features["label"].names == list(shapes_render.CLASS_NAMES)
  for split, per_class in (("train", 20), ("test", 7)):
    counts = collections.Counter(label for _, label in _records(shapes_tiny_dir, split))
    assert counts == {label: per_class for label in range(10)}


def test_generation_is_deterministic(shapes_tiny_dir, tmp_path):
  builder = tfds.builder("shapes10/tiny", data_dir=str(tmp_path))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  for split in ("train", "test"):
    assert _records(tmp_path, split) == _records(shapes_tiny_dir, split)


def test_default_config_is_balanced_and_seeded():
  default = builtin_shapes.Shapes10.builder_configs["default"]
  assert (default.train_per_class, default.test_per_class) == (1000, 200)
  assert len(shapes_render.CLASS_NAMES) == 10
  draw = lambda seed: shapes_render.render(3, 64, np.random.default_rng(seed))
  first = draw((0, 0, 3, 5))
  assert first.shape == (64, 64, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, draw((0, 0, 3, 5)))
  assert not np.array_equal(first, draw((0, 0, 3, 6)))


def test_processes_that_wait_for_the_generation_read_the_splits(tmp_path):
  # Two launcher points starting at once on a fresh machine: the one that waited for
  # the other's generation used to see no splits ("available splits: none").
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from tests import ckpt_helpers  # pylint: disable=g-import-not-at-top
  code = ("import sys; from mobilenet_jax import config_recipes as common; from mobilenet_jax import data\n"
          "c = common.data_config('shapes10/tiny', 32)\n"
          "c.data_dir, c.eval_split = sys.argv[1], 'test'\n"
          "print(data.get_dataset_info(c).num_train_examples)")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            cwd=ckpt_helpers.REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ckpt_helpers.REPO))
           for _ in range(2)]
  for proc in procs:
    out, err = proc.communicate(timeout=180)
    assert (proc.returncode, out.strip()) == (0, "200"), err[-2000:]
