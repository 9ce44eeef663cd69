r"""Evaluates a checkpoint on its run's eval split: loss, top-1, top-5.

    python -m mobilenet_jax.evaluate --workdir=runs/v1 [--step=N] [--ema] \
        [--split=test] [--data_dir=...] [--batch_size=N]

The model and data settings come from the config stored in the checkpoint; it runs
on however many devices are present (weights replicated, batches split over them).
Every example of the split counts exactly once (the padded last batch is masked).
The loss is plain cross-entropy, without the label smoothing of training.
Installed with pip, the same program is `mobilenet-evaluate`.
"""

from __future__ import annotations

from mobilenet_jax import runtime

if __name__ == "__main__":
  # Huge pages need a re-execution (runtime.py): done before JAX, Orbax and the data
  # pipeline load here, so that the process that stays is the only one to import them.
  runtime.reexec_with_hugepages("mobilenet_jax.evaluate")

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax

from mobilenet_jax import cli, console, data, restore
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.train import evaluation, sharding
from mobilenet_jax.train.step import make_eval_step


def define_flags() -> None:
  """The flags of `mobilenet-evaluate`."""
  cli.define_workdir()
  cli.define_checkpoint_choice("Evaluate")
  flags.DEFINE_string("split", None, "Split (default: the config's eval split).")
  cli.define_data_dir()
  cli.define_batch_size(None, "Global batch size (default: config.eval_batch_size).")


def evaluate(model, variables, data_config, batch_size: int,
             split: str | None = None) -> dict:
  """{"loss", "top1", "top5", "num_examples"} of `model` over one pass of `split`.

  `variables` should be replicated over all devices (as `mobilenet_jax.load` gives
  them); each batch is split over the devices of a "data" mesh axis.
  """
  # Every device needs an equal share; padding examples are masked out anyway.
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  eval_step = jax.jit(make_eval_step(model),
                      compiler_options=runtime.compiler_options("inference"))
  return evaluation.evaluate(eval_step, variables, data_config, batch_size,
                             sharding.create_mesh(), split)


def run(workdir: str, step: int | None = None, ema: bool = False,
        split: str | None = None, data_dir: str | None = None,
        batch_size: int | None = None) -> dict:
  """Restores the run in `workdir` and evaluates it; the metrics plus "split"."""
  _check_batch_size(batch_size)
  restored = restore.load(workdir, step=step, ema=ema)
  return _evaluate_restored(restored, workdir, split, data_dir, batch_size)


def _check_batch_size(batch_size: int | None) -> None:
  if batch_size is not None and batch_size < 1:
    raise ConfigError(f"--batch_size={batch_size} must be a positive integer.")


def _evaluate_restored(restored, workdir: str, split: str | None, data_dir: str | None,
                       batch_size: int | None) -> dict:
  """`run` after `restore.load`: the dataset checked against the model, then evaluated."""
  model, variables, config = restored
  if data_dir:
    config.data.data_dir = data_dir
  classes = data.get_dataset_info(config.data).num_classes
  if classes != config.model.num_classes:
    where = config.data.data_dir or "the default data_dir"
    raise ConfigError(
        f"the dataset {config.data.name!r} in {where} has {classes} classes, the model "
        f"of {workdir} {config.model.num_classes}: evaluate it on the dataset it was "
        "trained on (check --data_dir).")
  # The split read, named as the dataset names it ("test" is read from val/ where a
  # folder has no test/), so the printed line says which images were counted.
  split = data.resolve_split(config.data, split or config.data.eval_split)
  metrics = evaluate(model, variables, config.data,
                     batch_size or config.eval_batch_size, split)
  return dict(metrics, split=split)


def main(argv):
  """The command-line program."""
  # The compilation cache; huge pages here only for the console script (`-m`: above).
  runtime.prepare_process("mobilenet_jax.evaluate")
  console.configure(load_tensorflow=False)
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _check_batch_size(FLAGS.batch_size)
  # A wrong workdir or step is said before TensorFlow loads (2 s, not 11, on 2 cores).
  restored = restore.load(FLAGS.workdir, step=FLAGS.step, ema=FLAGS.ema)
  console.load_tensorflow_quietly()
  m = _evaluate_restored(restored, FLAGS.workdir, FLAGS.split, FLAGS.data_dir,
                         FLAGS.batch_size)
  weights = "EMA weights" if FLAGS.ema else "weights"
  print(f"{FLAGS.workdir} ({weights}) on {m['split']}: loss {m['loss']:.4f}  "
        f"top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  ({m['num_examples']} examples)")


def console_main():
  """The `mobilenet-evaluate` console script (and `python -m mobilenet_jax.evaluate`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
