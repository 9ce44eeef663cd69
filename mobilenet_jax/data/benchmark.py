r"""Measures input pipeline throughput (images/second), train and eval.

  python -m mobilenet_jax.data.benchmark \
      --config=configs/mobilenet_v1.py:dataset=shapes10,res=224 --batches=20

Reads as one process would in training (its share of each global batch); the first
`--warmup` batches (pipeline start, shuffle buffer fill) are not timed.
"""

from __future__ import annotations

import time

from absl import flags

from mobilenet_jax import cli
from mobilenet_jax import data


def define_flags() -> None:
  """The flags of the input-pipeline benchmark."""
  cli.define_config()
  flags.DEFINE_integer("batches", 20, "Timed batches per measurement.")
  flags.DEFINE_integer("warmup", 2, "Untimed batches before measuring.")
  cli.define_batch_size(None, "Global batch size (default: config.global_batch_size "
                        "for train, config.eval_batch_size for eval).")


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
  """absl entry point: prints train and eval images/s of --config's input pipeline."""
  del argv
  f = flags.FLAGS
  config = f.config
  train_batch = f.batch_size or config.global_batch_size
  eval_batch = f.batch_size or config.eval_batch_size
  info = data.get_dataset_info(config.data)
  print(f"dataset {config.data.name}: {info.num_classes} classes, "
        f"{info.num_train_examples} train / {info.num_eval_examples} eval examples; "
        f"image size {config.data.image_size}")
  rate, n = images_per_second(
      data.train_batches(config.data, train_batch, seed=config.get("seed", 0)),
      f.batches, f.warmup)
  print(f"train: {rate:,.0f} images/s ({n} images, batch {train_batch})")
  # Eval is one finite pass: re-read it until enough batches are timed.
  def eval_forever():
    while True:
      yield from data.eval_batches(config.data, eval_batch)
  rate, n = images_per_second(eval_forever(), f.batches, f.warmup)
  print(f"eval:  {rate:,.0f} images/s ({n} images, batch {eval_batch})")


def console_main():
  """`python -m mobilenet_jax.data.benchmark` (no console script: a developer's tool)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
