r"""Runs a sweep (experiments/sweeps.py): one training run per point, here or on TPUs.

  python -m experiments.launch --sweep=table6 --root=runs/table6 --dry_run
  python -m experiments.launch --sweep=async --root=runs/async_smoke --local_smoke \
      --parallel=2
  python -m experiments.launch --sweep=table7 --root=runs/table7 -- \
      --config.num_epochs=100 --config.data.data_dir=/data/tfds
  python -m experiments.launch --sweep=table6 --root=gs://BUCKET/runs/table6 \
      --tpu=mn-a,mn-b --zone=us-west4-a --create --accelerator=v5litepod-8 --spot \
      [--project=P] [--dry_run] -- --config.data.data_dir=gs://BUCKET/tfds

Each point trains with

  python -m mobilenet_jax.main --config=configs/<spec> --workdir=<root>/<name> \
      <the point's --config.* overrides> [smoke overrides] [what follows "--"]

A point is finished when <workdir>/results.json parses and records the point's
settings (experiments/point_state.py); finished points are skipped, so the same
command resumes a sweep: unfinished points resume from their latest checkpoint. A root
belongs to one sweep, and a point's name to its settings: launching another sweep
into a root, or a point whose root records other settings, stops with one line.

Locally, points run one after another (or --parallel=N at once), each writing its
output to <workdir>/train.log. SIGTERM or Ctrl-C stops the running points the way a
preemption does (each saves a checkpoint). A failed point does not stop the sweep;
failures are listed at the end and the exit status is then 1.

--local_smoke shrinks every point to a CPU run of a few seconds of training, keeping
what makes the points differ (experiments/smoke.py), and prints a time estimate that
counts process start-up and compilation.

--tpu=NAME[,NAME...] runs the sweep on Cloud TPU slices from this machine
(experiments/scheduler.py): every slice gets the code (HEAD, or with --dirty=ship the
working tree as it is: experiments/code_archive.py) and a checked environment
(experiments/remote_env.py), then takes the next unfinished point whenever it is free,
on all its workers (--distributed); one status line per point event. With --create
(--accelerator=TYPE [--spot]) the slices are queued resources the launcher requests,
waits for, requests again after a preemption (the point resumes from its last
checkpoint, on any free slice) and deletes when the sweep ends or is stopped
(experiments/queued_resources.py). The root must be a gs:// path every host sees (or,
with --shared_root, a filesystem mounted on every worker and here).

--dry_run prints the plan and the exact commands and writes nothing; it never touches
the network (a gs:// root is not even read). Otherwise ROOT/manifest.json records the
points, their commands and full configs, and the code (commit, and whether HEAD or the
working tree was shipped). `python -m experiments.compare --root=ROOT` compares the
results.

Installed with pip, the same program is `mobilenet-launch`.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shlex
import signal
import sys
import time

from absl import app, flags
import ml_collections

from mobilenet_jax import cli
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout

from . import (code_archive, local_runs, manifest, point_state, proxy,
               queued_resources, remote_env, smoke, sweeps, tpu, tpu_launch)

@dataclasses.dataclass(frozen=True)
class Job:
  """A point of a sweep, ready to start."""
  name: str
  workdir: str
  config: str  # The point's config spec, relative to configs/.
  args: tuple[str, ...]  # --config.* overrides: the point's, smoke's, then the user's.
  full_config: dict = dataclasses.field(compare=False, repr=False)  # What it trains.
  # The full-size point it stands for: the same as full_config unless in smoke mode.
  point_config: dict = dataclasses.field(compare=False, repr=False, default=None)

  def train_args(self, distributed: bool = False) -> list[str]:
    """The arguments after `python`: -m mobilenet_jax.main --config=... ..."""
    return ["-m", "mobilenet_jax.main", f"--config=configs/{self.config}",
            f"--workdir={self.workdir}", *(["--distributed"] if distributed else []),
            *self.args]


def is_remote(path: str) -> bool:
  """A path such as gs://bucket/...: reading it needs the network."""
  return "://" in path


def _flag_value(current, text: str):
  """`text` (a --config.KEY=VALUE value) typed like the config's `current` value."""
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{text!r} is not a boolean")
    return text.lower() in ("true", "1")
  if isinstance(current, (int, float)):
    return type(current)(text)
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_config_args(config, args) -> ml_collections.ConfigDict:
  """Applies the `--config.KEY=VALUE` entries of `args` (the user's, after "--") to
  `config`, so that a point's recorded settings are the ones it trains with."""
  overrides = []
  for arg in args:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    key, text = arg[len("--config."):].split("=", 1)
    node = config
    try:
      for part in key.split(".")[:-1]:
        node = node[part]
      overrides.append((key, _flag_value(node[key.split(".")[-1]], text)))
    except (KeyError, AttributeError, TypeError, ValueError) as e:
      raise app.UsageError(f"{arg}: not a setting of the points' configs ({e}).")
  return sweeps.apply_overrides(config, overrides)


def make_jobs(sweep: str, root: str, *, local_smoke: bool = False,
              smoke_images: int = smoke.DEFAULT_IMAGES, extra_args: tuple[str, ...] = (),
              only: tuple[str, ...] = (), seeds: int = 1,
              proxy_name: str | None = None) -> list[Job]:
  """A job per point of `sweep` (or of the points named in `only`), under `root`;
  each point `seeds` times, as a `proxy_name` proxy point if given."""
  definition = sweeps.get_sweep(sweep)
  points = sweeps.with_seeds(proxy.proxy_points(definition, proxy_name) if proxy_name
                             else definition.points, seeds)
  if only:
    known = {p.name for p in points}
    unknown = [n for n in only if n not in known]
    if unknown:
      raise ConfigError(f"No point {', '.join(unknown)} in sweep {sweep}; its points: "
                       f"{', '.join(sorted(known))}.")
    points = [p for p in points if p.name in only]
  root = root.rstrip("/") if is_remote(root) else os.path.abspath(root)
  jobs = []
  for point in points:
    config = point.build()
    point_config = run_identity.config_dict(point.full_size_config())
    overrides = list(point.overrides)
    if local_smoke:
      shrink = smoke.smoke_overrides(config, smoke_images)
      sweeps.apply_overrides(config, shrink)
      overrides += shrink
    args = (*sweeps.override_args(overrides), *extra_args)
    full = run_identity.config_dict(apply_config_args(config, extra_args))
    jobs.append(Job(point.name, f"{root}/{point.name}", point.config, args, full,
                    point_config))
  return jobs


def pending(jobs: list[Job], out, *, dry_run: bool) -> list[Job]:
  """The jobs without results; finished ones are reported as skipped.

  A dry run does not read a remote root: it lists every job.

  Raises:
    point_state.PointMismatch: a point's workdir holds results of other settings.
  """
  todo = []
  for i, job in enumerate(jobs, 1):
    if dry_run and is_remote(job.workdir):
      todo.append(job)
    elif point_state.is_finished(job):
      print(f"[{i}/{len(jobs)}] skip {job.name}: {layout.results_path(job.workdir)} "
            "exists", file=out, flush=True)
    else:
      unreadable = point_state.unreadable_results(job)
      if unreadable:
        print(f"[{i}/{len(jobs)}] {job.name} is not finished: {unreadable} It resumes "
              "from its last checkpoint.", file=out, flush=True)
      todo.append(job)
  return todo


# ------------------------------------------------------------------ flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The flags of `mobilenet-launch` (what follows "--" goes to every point)."""
  flags.DEFINE_enum("sweep", None, sweeps.SWEEP_NAMES, "Which sweep to run.",
                    required=True)
  cli.define_root("Each point's workdir is ROOT/<point name>.")
  flags.DEFINE_list("only", [], "Run only these points (names as listed by "
                    "mobilenet-sweeps).")
  flags.DEFINE_bool("dry_run", False,
                    "Print the plan and the commands; run and write nothing.")
  flags.DEFINE_bool("local_smoke", False,
                    "Shrink every point to a CPU smoke run (experiments/smoke.py).")
  flags.DEFINE_integer("smoke_images", smoke.DEFAULT_IMAGES,
                       "Training images per point in smoke mode.")
  flags.DEFINE_integer("seeds", 1, "Train every point with seeds 0..N-1 (workdirs "
                       "<point>, <point>_seed1, ...).")
  flags.DEFINE_enum("proxy", None, list(proxy.PROXIES), "Train the paper sweep's "
                    "points on this small dataset (experiments/proxy.py).")
  flags.DEFINE_integer("parallel", 1, "Local points run at once.")
  flags.DEFINE_string("python", sys.executable,
                      "The local Python that trains (local runs only).")
  _define_tpu_flags()


def _define_tpu_flags() -> None:
  """TPU slices (scheduler.py, tpu_backend.py, queued_resources.py) and the code and
  environment the workers get (code_archive.py, remote_env.py)."""
  flags.DEFINE_string("tpu", None, "TPU slice name(s), comma-separated: existing TPU "
                      "VMs, or with --create the queued resources to request.")
  flags.DEFINE_string("zone", None, "The slices' zone (with --tpu).")
  flags.DEFINE_string("project", None, "The slices' project (with --tpu).")
  flags.DEFINE_bool("create", False, "Request the --tpu slices as queued resources, "
                    "request them again when preempted, delete them when the sweep "
                    "ends or is stopped.")
  flags.DEFINE_string("accelerator", None, "The slices' accelerator type, e.g. "
                      "v5litepod-8, v6e-8, v5p-8 (needed with --create; otherwise it "
                      "only sets the device count the check expects).")
  flags.DEFINE_bool("spot", False, "With --create: request Spot (preemptible) capacity.")
  flags.DEFINE_string("runtime_version", None, "With --create: the TPU software "
                      "version; default the one Google recommends for JAX on the "
                      "accelerator's generation.")
  flags.DEFINE_bool("shared_root", False, "With --tpu: the root is not gs:// but a "
                    "filesystem mounted at the same path on every worker and here.")
  flags.DEFINE_float("poll_seconds", 60.0, "How often slice states are read while "
                     "waiting or training (with --tpu).")
  flags.DEFINE_enum("dirty", "refuse", code_archive.DIRTY_POLICIES, "With --tpu and "
                    "uncommitted changes: refuse to launch, or ship the working tree "
                    "as it is (named by a content hash).")
  flags.DEFINE_string("remote_jax", remote_env.default_jax_requirement(), "The jax "
                      "requirement the workers' venv installs; with [tpu] the "
                      "environment check requires TPU devices.")


# ------------------------------------------------------------------ entry point

def _tpu_settings() -> tpu_launch.Settings | None:
  """--tpu and its companions, checked together; None without --tpu."""
  if not FLAGS.tpu:
    if FLAGS.create or FLAGS.spot:
      raise app.UsageError("--create and --spot need --tpu=NAME[,NAME...]: the names "
                           "of the slices to request.")
    return None
  if not FLAGS.zone:
    raise app.UsageError("--tpu needs --zone=ZONE (the zone of the slices).")
  if FLAGS.spot and not FLAGS.create:
    raise app.UsageError("--spot applies to slices this launch requests: add --create.")
  if FLAGS.create and not FLAGS.accelerator:
    raise app.UsageError("--create needs --accelerator=TYPE, e.g. v5litepod-8 or v6e-8.")
  if FLAGS.accelerator:
    try:
      queued_resources.parse_accelerator(FLAGS.accelerator)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  if not is_remote(FLAGS.root) and not FLAGS.shared_root:
    raise app.UsageError("--tpu trains in a root every host sees: give a gs:// --root "
                         "(or --shared_root for a filesystem mounted on every worker).")
  return tpu_launch.Settings(
      tuple(tpu.parse_slices(FLAGS.tpu, FLAGS.zone, FLAGS.project)),
      accelerator=FLAGS.accelerator, create=FLAGS.create, spot=FLAGS.spot,
      runtime_version=FLAGS.runtime_version, dirty=FLAGS.dirty,
      jax_requirement=FLAGS.remote_jax, poll_s=FLAGS.poll_seconds)


def _local_commands(jobs) -> dict[str, list[str]]:
  return {job.name: [FLAGS.python, *job.train_args()] for job in jobs}


def _run_here(todo, out) -> list[str]:
  signal.signal(signal.SIGTERM, lambda *_: local_runs.CHILDREN.terminate())
  try:
    return local_runs.run_local(todo, python=FLAGS.python, parallel=FLAGS.parallel,
                                out=out)
  except KeyboardInterrupt:
    local_runs.CHILDREN.terminate()
    raise


def main(argv):
  """absl entry point: argv[1:] (what follows "--") goes to every point."""
  out = sys.stdout
  settings = _tpu_settings()
  if FLAGS.proxy and FLAGS.local_smoke:
    raise app.UsageError("--proxy and --local_smoke are two ways to shrink a sweep: "
                         "give one.")
  jobs = make_jobs(FLAGS.sweep, FLAGS.root, local_smoke=FLAGS.local_smoke,
                   smoke_images=FLAGS.smoke_images, extra_args=tuple(argv[1:]),
                   only=tuple(FLAGS.only), seeds=FLAGS.seeds, proxy_name=FLAGS.proxy)
  if not (FLAGS.dry_run and is_remote(FLAGS.root)):
    manifest.check(FLAGS.root, FLAGS.sweep, jobs)
  todo = pending(jobs, out, dry_run=FLAGS.dry_run)
  version = code_archive.inspect()
  if settings:
    code_archive.check(version, settings.dirty)
  elif FLAGS.local_smoke and todo:
    estimates = [smoke.estimate(ml_collections.ConfigDict(j.full_config)) for j in todo]
    print(smoke.format_estimate(estimates, FLAGS.parallel), file=out, flush=True)
  elif FLAGS.proxy and todo:
    print(proxy.format_estimate(todo, FLAGS.proxy, FLAGS.parallel), file=out, flush=True)
  if FLAGS.dry_run:
    if settings:
      tpu_launch.print_plan(todo, settings, version, out)
    else:
      commands = _local_commands(todo)
      for job in todo:
        print(shlex.join(commands[job.name]), file=out)
    return
  commands = (tpu_launch.commands(jobs, settings, version) if settings
              else _local_commands(jobs))
  manifest.write(FLAGS.root, manifest.build(
      FLAGS.sweep, jobs, commands, version.to_json(), smoke=FLAGS.local_smoke,
      smoke_images=FLAGS.smoke_images if FLAGS.local_smoke else None,
      seeds=FLAGS.seeds, proxy=FLAGS.proxy, extra_args=list(argv[1:]),
      tpu=[dataclasses.asdict(s) for s in settings.slices] if settings else [],
      create=({"accelerator": settings.accelerator, "spot": settings.spot}
              if settings and settings.create else None)))
  start = time.time()
  if settings:
    try:
      failed = tpu_launch.run(todo, settings, version, out)
    except KeyboardInterrupt:  # A second Ctrl-C while the first one stops the points.
      cli.fail("stopped at once: points may still run and slices may remain; "
               "rerun the command to carry on, or list and delete slices with "
               "gcloud compute tpus queued-resources list/delete.")
  else:
    failed = _run_here(todo, out)
  elapsed = time.time() - start
  if failed:
    print(f"{len(failed)} of {len(jobs)} points did not finish: {', '.join(failed)} "
          f"({elapsed:.0f} s); the same command resumes them", flush=True)
    sys.exit(1)
  print(f"All {len(jobs)} points of {FLAGS.sweep} have results under {FLAGS.root} "
        f"({len(todo)} pending at launch, {elapsed:.0f} s); compare them with: "
        f"python -m experiments.compare --root={FLAGS.root}", flush=True)


def console_main():
  """The `mobilenet-launch` console script (and `python -m experiments.launch`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
