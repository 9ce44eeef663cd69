r"""Runs a sweep (experiments/sweeps.py): one training run per config, one after another.

  python -m experiments.launch --sweep=table6 --root=runs/table6 --dry_run
  python -m experiments.launch --sweep=table6 --root=runs/table6
  python -m experiments.launch --sweep=grid --root=runs/grid_smoke --local_smoke
  python -m experiments.launch --sweep=table7 --root=runs/table7 -- \
      --config.num_epochs=100 --config.data.data_dir=gs://BUCKET/tfds

Each run trains with

  python -m mobilenet_jax.main --config=configs/<spec> --workdir=<root>/<name> [extra]

where the extra arguments are everything after "--" (--config.* overrides, applied to
every run). A run whose workdir already holds results.json is skipped, so running the
same command again resumes a sweep: unfinished runs resume from their latest
checkpoint. A failed run does not stop the sweep; the failures are listed at the end
and the exit status is then 1. `python -m experiments.compare --root=<root>` compares
the results with the papers.

--local_smoke appends ",runlocal" to every spec (configs/common.py
shrink_for_local_run: the built-in shapes10 data at 32x32, width <= 0.25, 20 steps), so
a whole sweep runs on a CPU in minutes. It checks the plumbing, not the accuracies.

TPU VMs. A Cloud TPU VM slice of several hosts runs one JAX process per host, and
every host must run the same program, with --distributed so that mobilenet_jax.main
calls jax.distributed.initialize() (which finds the slice's hosts by itself). Either
run the launcher itself on every host at once, with a root that every host sees (a
gs:// bucket: each host then skips the same finished runs and all of them start the
same run together):

  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command="\
      cd mobilenet-jax && python -m experiments.launch --sweep=table6 \
      --root=gs://BUCKET/runs/table6 -- --distributed \
      --config.data.data_dir=gs://BUCKET/tfds"

or print the commands with --dry_run and run each one on a slice of its own, the
same way (--worker=all --command="cd mobilenet-jax && python -m mobilenet_jax.main
..."), to train several configs in parallel. On a single-host slice (v4-8, v5e-8)
plain ssh and the command above is enough. This module itself makes no network
calls.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys

from absl import app, flags
from etils import epath

from experiments import sweeps

_SWEEP = flags.DEFINE_enum("sweep", None, sweeps.SWEEP_NAMES, "Which sweep to run.")
_ROOT = flags.DEFINE_string("root", None, "Each run's workdir is ROOT/<run name>.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing.")
_LOCAL_SMOKE = flags.DEFINE_bool(
    "local_smoke", False, "Append ',runlocal' to every config: a tiny run for a CPU.")
_PYTHON = flags.DEFINE_string("python", sys.executable, "The Python that trains.")
flags.mark_flags_as_required(["sweep", "root"])


@dataclasses.dataclass(frozen=True)
class Job:
  """A run of a sweep, ready to start."""
  name: str
  workdir: str
  command: tuple[str, ...]

  @property
  def finished(self) -> bool:
    return (epath.Path(self.workdir) / "results.json").exists()


def make_jobs(sweep: str, root: str, *, local_smoke: bool = False,
              extra_args: tuple[str, ...] = (), python: str = sys.executable) -> list[Job]:
  """The training command of every run of `sweep`, with its workdir under `root`."""
  jobs = []
  for run in sweeps.get_sweep(sweep):
    spec = sweeps.with_args(run.config, "runlocal") if local_smoke else run.config
    workdir = root.rstrip("/") + "/" + run.name  # Plain text keeps "gs://" as typed.
    command = (python, "-m", "mobilenet_jax.main", f"--config=configs/{spec}",
               f"--workdir={workdir}", *extra_args)
    jobs.append(Job(run.name, workdir, command))
  return jobs


def run_jobs(jobs: list[Job], *, dry_run: bool = False, out=None) -> list[str]:
  """Runs (or, with `dry_run`, prints) each unfinished job in turn.

  Returns the names of the runs that failed: a non-zero exit status, or no
  results.json afterwards (a preempted run, which the same command resumes).
  """
  out = out or sys.stdout
  failed = []
  for i, job in enumerate(jobs, 1):
    if job.finished:
      print(f"[{i}/{len(jobs)}] skip {job.name}: {job.workdir}/results.json exists",
            file=out, flush=True)
      continue
    line = shlex.join(job.command)
    if dry_run:
      print(line, file=out, flush=True)
      continue
    print(f"[{i}/{len(jobs)}] {job.name}: {line}", file=out, flush=True)
    returncode = subprocess.call(job.command)
    if returncode != 0:
      print(f"[{i}/{len(jobs)}] {job.name} FAILED with exit status {returncode}",
            file=out, flush=True)
      failed.append(job.name)
    elif not job.finished:
      print(f"[{i}/{len(jobs)}] {job.name} stopped without results.json (preempted?); "
            "run the sweep again to resume it", file=out, flush=True)
      failed.append(job.name)
  return failed


def main(argv):
  """absl entry point: argv[1:] (what follows "--") goes to every run."""
  extra_args = tuple(argv[1:])
  jobs = make_jobs(_SWEEP.value, _ROOT.value, local_smoke=_LOCAL_SMOKE.value,
                   extra_args=extra_args, python=_PYTHON.value)
  failed = run_jobs(jobs, dry_run=_DRY_RUN.value)
  if failed:
    print(f"{len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}", flush=True)
    sys.exit(1)
  if not _DRY_RUN.value:
    print(f"All {len(jobs)} runs of {_SWEEP.value} have results under {_ROOT.value}; "
          f"compare them with: python -m experiments.compare --root={_ROOT.value}",
          flush=True)


if __name__ == "__main__":
  app.run(main)
