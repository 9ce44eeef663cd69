r"""Measures input pipeline throughput (images/second), train and eval.

  python -m mobilenet_jax.data.benchmark \
      --config=configs/mobilenet_v1.py:dataset=shapes10,res=224 --batches=20

Reads as one process would in training (its share of each global batch); the first
`--warmup` batches (pipeline start, shuffle buffer fill) are not timed.
"""

from __future__ import annotations

import time

from absl import flags
from ml_collections import config_flags

from mobilenet_jax import data
from mobilenet_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (with args).",
                                          lock_config=True)
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches before measuring.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 0, "Global batch size; 0 = config.global_batch_size (train) and "
    "config.eval_batch_size (eval).")


def images_per_second(batches, num_batches: int, warmup: int) -> tuple[float, int]:
  """(images/s, timed images) over `num_batches` after `warmup` untimed batches."""
  iterator = iter(batches)
  for _ in range(warmup):
    if next(iterator, None) is None:
      break
  count, start = 0, time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator, None)
    if batch is None:
      break
    # Eval padding is not work done: count real examples only.
    count += int(batch["mask"].sum()) if "mask" in batch else len(batch["label"])
  elapsed = time.perf_counter() - start
  return (count / elapsed if elapsed > 0 else 0.0), count


def main(argv):
  del argv
  config = _CONFIG.value
  train_batch = _BATCH_SIZE.value or config.global_batch_size
  eval_batch = _BATCH_SIZE.value or config.eval_batch_size
  info = data.get_dataset_info(config.data)
  print(f"dataset {config.data.name}: {info.num_classes} classes, "
        f"{info.num_train_examples} train / {info.num_eval_examples} eval examples; "
        f"image size {config.data.image_size}")
  rate, n = images_per_second(
      data.train_batches(config.data, train_batch, seed=config.get("seed", 0)),
      _BATCHES.value, _WARMUP.value)
  print(f"train: {rate:,.0f} images/s ({n} images, batch {train_batch})")
  # Eval is one finite pass: re-read it until enough batches are timed.
  def eval_forever():
    while True:
      yield from data.eval_batches(config.data, eval_batch)
  rate, n = images_per_second(eval_forever(), _BATCHES.value, _WARMUP.value)
  print(f"eval:  {rate:,.0f} images/s ({n} images, batch {eval_batch})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  errors.run(main)
