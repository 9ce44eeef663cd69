r"""Trains and evaluates a MobileNet.

  python -m mobilenet_jax.main --config=configs/default.py --workdir=/tmp/mobilenet
  python -m mobilenet_jax.main --config=configs/mobilenet_v1.py:width=0.5,res=160 \
      --workdir=runs/v1_050_160 --config.global_batch_size=512

Running again in the same workdir resumes from its latest checkpoint. Several
processes (multi-host TPU/GPU) call `jax.distributed.initialize()`: with --distributed,
or automatically where the cluster environment announces itself. The console shows
one line per log interval; `--verbosity=0` adds every library's INFO logs.
Installed with pip, the same program is `mobilenet-train`.
"""

import os
import sys

from absl import app, flags

from mobilenet_jax import cli, console
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import layout


def define_flags() -> None:
  """The flags of `mobilenet-train`."""
  cli.define_config()
  cli.define_workdir("Where checkpoints and metrics go; a workdir with checkpoints "
                     "resumes from its latest.")
  flags.DEFINE_bool(
      "distributed", False,
      "Call jax.distributed.initialize(); its arguments come from the three flags below "
      "or, on TPU pods and SLURM/MPI clusters, from the environment.")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0, e.g. 127.0.0.1:12345.")
  flags.DEFINE_integer("num_processes", None, "Number of processes.")
  flags.DEFINE_integer("process_id", None, "This process's index.")


# Environments in which jax.distributed.initialize() finds its arguments by itself.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                "MEGASCALE_COORDINATOR_ADDRESS")


def _initialize_distributed(jax) -> None:
  """jax.distributed.initialize(), or one ConfigError saying what is missing."""
  try:
    # On CPU, collectives across processes go through gloo (JAX's default).
    jax.distributed.initialize(coordinator_address=flags.FLAGS.coordinator_address,
                               num_processes=flags.FLAGS.num_processes,
                               process_id=flags.FLAGS.process_id)
  except ValueError as e:  # JAX found no cluster to join, e.g. "coordinator_address ..."
    reason = str(e).rstrip(".")
    raise ConfigError(
        f"--distributed: no cluster environment found ({reason}). On a Cloud TPU VM "
        "slice, SLURM or Open MPI JAX finds its processes by itself; elsewhere pass "
        "--coordinator_address=HOST:PORT --num_processes=N --process_id=I, or drop "
        "--distributed for a single process.") from None


def main(argv):
  """absl entry point."""
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from mobilenet_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.prepare_process("mobilenet_jax.main")  # Huge pages, compilation cache.
  # Before TensorFlow and Orbax are imported; TensorFlow itself after validation.
  console.configure(load_tensorflow=False)
  import jax  # pylint: disable=g-import-not-at-top
  if (FLAGS.distributed or FLAGS.coordinator_address
      or any(k in os.environ for k in _CLUSTER_ENV)):
    _initialize_distributed(jax)
  # Config errors in the first seconds, before TensorFlow and the trainer load; what
  # needs the devices, the dataset or the workdir is checked by the trainer.
  from mobilenet_jax.train import run_plan, validation  # pylint: disable=g-import-not-at-top
  validation.validate(FLAGS.config)
  run_plan.check_paths(FLAGS.config, FLAGS.workdir)
  console.load_tensorflow_quietly()
  from mobilenet_jax.train import preemption, trainer  # pylint: disable=g-import-not-at-top
  results = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, validated=True)
  if results.get("signal") == "SIGINT":
    sys.exit(preemption.INTERRUPTED_STATUS)
  final = results.get("final", {})
  if final:
    print(f"Final {results['eval_split']} top-1 {final['raw']['top1']:.4f} "
          f"(EMA {final['ema']['top1']:.4f}), "
          f"top-5 {final['raw']['top5']:.4f}, over {final['raw']['num_examples']} "
          f"examples; {results['wall_time_s']:.0f} s, "
          f"{results['train_images_per_sec']:.0f} train images/s. "
          f"Results in {layout.results_path(FLAGS.workdir)}", flush=True)


def console_main():
  """The `mobilenet-train` console script (and `python -m mobilenet_jax.main`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
