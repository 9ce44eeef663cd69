r"""Classifies image files with a trained run: the top classes and their probabilities.

    python -m mobilenet_jax.predict --workdir=runs/v1 [--step=N] [--ema] a.jpg b.png

Images get the eval preprocessing of the run's config. Class names come from the
run's dataset; if it is not available here, classes are shown by index.
Installed with pip, the same program is `mobilenet-predict`.
"""

from __future__ import annotations

from mobilenet_jax import runtime

if __name__ == "__main__":
  # Huge pages need a re-execution (runtime.py): done before JAX, Orbax and the data
  # pipeline load here, so that the process that stays is the only one to import them.
  runtime.reexec_with_hugepages("mobilenet_jax.predict")

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys

from absl import app
from absl import flags
import jax
import numpy as np

import mobilenet_jax
from mobilenet_jax import cli, console, data, restore
from mobilenet_jax.errors import DataError


def define_flags() -> None:
  """The flags of `mobilenet-predict` (the image files follow them)."""
  cli.define_workdir()
  cli.define_checkpoint_choice("Use")
  cli.define_data_dir(" (where the class names are looked up)")
  flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")


def class_names(data_config, num_classes: int) -> list[str]:
  """The dataset's class names, or the indices as strings if it is unavailable."""
  try:
    names = list(data.get_dataset_info(data_config).class_names)
  except Exception as error:  # pylint: disable=broad-except
    # Any failure (missing dataset, no TFDS builder, ...) only costs the names.
    print(f"warning: class names unavailable ({error}); showing indices.",
          file=sys.stderr)
    names = []
  if len(names) != num_classes:
    names = [str(i) for i in range(num_classes)]
  return names


def predict(model, variables, data_config, paths: list[str], top_k: int = 5
            ) -> list[list[tuple[int, float]]]:
  """For each image file, its `top_k` (class index, probability), most likely first."""
  images = []
  for path in paths:
    try:
      images.append(data.read_image_file(path))
    except FileNotFoundError as error:
      raise DataError(str(error)) from None
  # The run's eval transform (mobilenet_jax.preprocess), as in evaluation.
  batch = mobilenet_jax.preprocess(images, data_config.image_size,
                                   data_config.eval_crop_fraction)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False),
                   compiler_options=runtime.compiler_options("inference"))(variables, batch)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
  top_k = min(top_k, probs.shape[-1])
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
  return [[(int(i), float(p[i])) for i in row] for p, row in zip(probs, order)]


def main(argv):
  """The command-line program."""
  # The compilation cache; huge pages here only for the console script (`-m`: above).
  runtime.prepare_process("mobilenet_jax.predict")
  console.configure(load_tensorflow=False)
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give one or more image files.")
  if FLAGS.top_k < 1:
    raise app.UsageError(f"--top_k={FLAGS.top_k} must be a positive integer.")
  # A wrong file, workdir or step is said before TensorFlow loads (2 s, not 11, on 2
  # cores), and a wrong file before the model is restored.
  try:
    data.check_image_paths(paths)
  except FileNotFoundError as error:
    raise DataError(str(error)) from None
  model, variables, config = restore.load(FLAGS.workdir, step=FLAGS.step,
                                          ema=FLAGS.ema)
  console.load_tensorflow_quietly()
  if FLAGS.data_dir:
    config.data.data_dir = FLAGS.data_dir
  results = predict(model, variables, config.data, paths, FLAGS.top_k)
  names = class_names(config.data, config.model.num_classes)
  for path, top in zip(paths, results):
    print(path)
    for index, prob in top:
      print(f"  {prob:.4f}  {names[index]} ({index})")


def console_main():
  """The `mobilenet-predict` console script (and `python -m mobilenet_jax.predict`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
