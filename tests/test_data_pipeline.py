"""Train and eval batches: shapes, ranges, sharding, exact eval, resume."""

import hashlib
import itertools

import numpy as np
import pytest

from mobilenet_jax import config_recipes
from mobilenet_jax import data


def _config(data_dir, image_size=32, **overrides):
  config = config_recipes.data_config("shapes10/tiny", image_size)
  config.data_dir = data_dir
  config.eval_split = "test"
  config.update(overrides)
  return config


def _digest(image):
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _real_examples(batches):
  """[(image digest, label)] of the unpadded examples of eval batches."""
  return [(_digest(image), int(label))
          for batch in batches
          for image, label, mask in zip(batch["image"], batch["label"], batch["mask"])
          if mask == 1.0]


def test_dataset_info(shapes_tiny_dir):
  info = data.get_dataset_info(_config(shapes_tiny_dir, eval_split="validation"))
  assert info.num_classes == 10 and info.class_names[0] == "circle"
  # shapes10 has no "validation" split: it falls back to "test".
  assert (info.num_train_examples, info.num_eval_examples) == (200, 70)
  info = data.get_dataset_info(_config(shapes_tiny_dir, train_split="train[:50%]"))
  assert info.num_train_examples == 100


@pytest.mark.parametrize("image_size", [32, 48])
def test_batch_shapes_dtypes_ranges(shapes_tiny_dir, image_size):
  config = _config(shapes_tiny_dir, image_size)
  batch = next(data.train_batches(config, 16, seed=0, process_index=0, process_count=1))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (16, image_size, image_size, 3)
  assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
  assert -1.0 <= batch["image"].min() < 0.0 < batch["image"].max() <= 1.0
  assert ((0 <= batch["label"]) & (batch["label"] < 10)).all()
  batches = list(data.eval_batches(config, 32, process_index=0, process_count=1))
  assert len(batches) == 3  # 70 examples.
  for batch in batches:
    assert set(batch) == {"image", "label", "mask"}
    assert batch["image"].shape == (32, image_size, image_size, 3)
    assert batch["image"].dtype == np.float32 and batch["mask"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


@pytest.mark.parametrize("process_count,global_batch", [(1, 16), (2, 16), (3, 12)])
def test_eval_is_exact_over_processes(shapes_tiny_dir, process_count, global_batch):
  config = _config(shapes_tiny_dir)
  single = _real_examples(data.eval_batches(config, 70, process_index=0,
                                            process_count=1))
  assert len(single) == 70 and len(set(single)) == 70
  per_process, num_batches, mask_total = [], set(), 0.0
  for index in range(process_count):
    batches = list(data.eval_batches(config, global_batch, process_index=index,
                                     process_count=process_count))
    num_batches.add(len(batches))
    mask_total += sum(b["mask"].sum() for b in batches)
    per_process.append(_real_examples(batches))
  assert len(num_batches) == 1  # Same batch count everywhere: no collective hangs.
  assert mask_total == 70
  everything = list(itertools.chain(*per_process))
  assert sorted(everything) == sorted(single)  # Each example exactly once.


def test_train_shards_are_disjoint_and_cover_the_split(shapes_tiny_dir):
  # Without augmentation at the stored size, a train image identifies its example.
  identity = dict(crop_area_range=(1.0, 1.0), crop_aspect_range=(1.0, 1.0),
                  random_flip=False, eval_crop_fraction=1.0)
  config = _config(shapes_tiny_dir, 64, **identity)
  shards = []
  for index in range(2):  # 100 examples each: 5 steps of 20 make one epoch.
    batches = data.train_batches(config, 40, seed=3, process_index=index,
                                 process_count=2)
    shards.append({(_digest(image), int(label))
                   for batch in itertools.islice(batches, 5)
                   for image, label in zip(batch["image"], batch["label"])})
  assert len(shards[0]) == len(shards[1]) == 100
  assert not shards[0] & shards[1]
  whole = _real_examples(data.eval_batches(config, 50, split="train",
                                           process_index=0, process_count=1))
  assert shards[0] | shards[1] == set(whole)


# 200 examples: per process, 6 batches an epoch and 8 (1 process, batch 32) or 4 (2
# processes, 16 each) examples left over, which an epoch drops. Resumes mid-epoch
# (3, 14) and on an epoch boundary (6); each reads on into the next epoch.
@pytest.mark.parametrize("start_step,process_count", [(3, 1), (14, 1), (6, 2), (3, 2)])
def test_train_resume_is_exact(shapes_tiny_dir, start_step, process_count):
  config = _config(shapes_tiny_dir)
  end = start_step + 7  # Into the next epoch.
  for index in range(process_count):
    kwargs = dict(global_batch_size=32, seed=7, process_index=index,
                  process_count=process_count)
    from_zero = list(itertools.islice(data.train_batches(config, **kwargs), end))
    resumed = list(itertools.islice(
        data.train_batches(config, start_step=start_step, **kwargs), end - start_step))
    for expected, got in zip(from_zero[start_step:], resumed, strict=True):
      np.testing.assert_array_equal(got["image"], expected["image"])
      np.testing.assert_array_equal(got["label"], expected["label"])


def test_train_depends_on_seed_and_cache_does_not_change_it(shapes_tiny_dir):
  config = _config(shapes_tiny_dir)
  kwargs = dict(global_batch_size=16, process_index=0, process_count=1)
  first = next(data.train_batches(config, seed=0, **kwargs))
  assert not np.array_equal(first["image"],
                            next(data.train_batches(config, seed=1, **kwargs))["image"])
  cached_config = _config(shapes_tiny_dir, cache=True)
  cached = next(data.train_batches(cached_config, seed=0, **kwargs))
  np.testing.assert_array_equal(first["image"], cached["image"])


def test_batch_must_split_over_processes(shapes_tiny_dir):
  with pytest.raises(ValueError, match="multiple of the process count"):
    data.train_batches(_config(shapes_tiny_dir), 10, seed=0, process_index=0,
                       process_count=3)


def test_tensorflow_loads_quietly_without_keras_and_keras_still_works():
  # Keras is ~2 s of TensorFlow's import (mobilenet_jax/data/_tf.py); it must still
  # load on first use, by every route, with TensorFlow's own module path. The public
  # API's first TensorFlow use prints none of TensorFlow's C++ start-up lines.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests import training_runs  # pylint: disable=g-import-not-at-top
  script = (
      "import sys\n"
      "import numpy as np\n"
      "import mobilenet_jax\n"
      "mobilenet_jax.preprocess([np.zeros((40, 40, 3), np.uint8)], 32, 0.875)\n"
      "from mobilenet_jax.data._tf import tf\n"
      "import tensorflow_datasets\n"
      "print('keras' in sys.modules, tf.__path__[:2] == [p for p in tf.__path__[:2] "
      "if '/keras/' in p])\n"
      "from tensorflow.keras import layers\n"
      "import keras\n"
      "print(tf.keras.layers.Dense is layers.Dense is keras.layers.Dense)\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=training_runs.REPO,
                        env=training_runs.env_with_devices(1), capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["False", "True", "True"], proc.stdout
  for line in ("oneDNN custom operations", "cpu_feature_guard", "InitializeLog"):
    assert line not in proc.stderr, proc.stderr[-2000:]
