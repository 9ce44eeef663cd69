r"""Runs a sweep (experiments/sweeps.py): one training run per point, here or on TPU VMs.

  python -m experiments.launch --sweep=table6 --root=runs/table6 --dry_run
  python -m experiments.launch --sweep=async --root=runs/async_smoke --local_smoke \
      --parallel=2
  python -m experiments.launch --sweep=table7 --root=runs/table7 -- \
      --config.num_epochs=100 --config.data.data_dir=/data/tfds
  python -m experiments.launch --sweep=table6 --root=gs://BUCKET/runs/table6 \
      --tpu=v4-a,v4-b --zone=us-central2-b [--project=P] [--dry_run] -- \
      --config.data.data_dir=gs://BUCKET/tfds

Each point trains with

  python -m mobilenet_jax.main --config=configs/<spec> --workdir=<root>/<name> \
      <the point's --config.* overrides> [smoke overrides] [what follows "--"]

Locally, points run one after another (or --parallel=N at once), each writing its
output to <workdir>/train.log. A point whose workdir holds results.json is skipped,
so the same command resumes a sweep: unfinished points resume from their latest
checkpoint. SIGTERM or Ctrl-C stops the running points the way a preemption does
(each saves a checkpoint). A failed point does not stop the sweep; failures are
listed at the end and the exit status is then 1.

--local_smoke shrinks every point to a CPU run of a few seconds of training, keeping
what makes the points differ (experiments/smoke.py), and prints a time estimate that
counts process start-up and compilation.

--tpu=NAME[,NAME...] runs points on Cloud TPU VM slices (experiments/tpu.py): the
code is copied to every worker once per slice, installed with jax[tpu] if needed, and
each point runs on all workers of one slice (--worker=all) with --distributed, under
nohup with a log file. Several slices take points in parallel, one point per slice at
a time. The root must be a gs:// path every host sees.

--dry_run prints the commands and writes nothing; it never touches the network (a
gs:// root is not even read). Otherwise ROOT/manifest.json records the points, their
commands and full configs, and the code version. `python -m experiments.compare
--root=ROOT` compares the results.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time

from absl import app, flags
import ml_collections

from experiments import manifest, proxy, smoke, sweeps, tpu
from mobilenet_jax import errors, run_dir
from mobilenet_jax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent


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
    point_config = run_dir.config_dict(point.full_size_config())
    overrides = list(point.overrides)
    if local_smoke:
      shrink = smoke.smoke_overrides(config, smoke_images)
      sweeps.apply_overrides(config, shrink)
      overrides += shrink
    args = (*sweeps.override_args(overrides), *extra_args)
    full = run_dir.config_dict(config)
    jobs.append(Job(point.name, f"{root}/{point.name}", point.config, args, full,
                    point_config))
  return jobs


def code_version() -> str:
  """The git commit of this code ("-dirty" with uncommitted changes), else the
  package version."""
  try:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.strip()
    return commit + ("-dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    import mobilenet_jax  # pylint: disable=g-import-not-at-top
    return mobilenet_jax.__version__


def pending(jobs: list[Job], out, *, dry_run: bool) -> list[Job]:
  """The jobs without results; finished ones are reported as skipped.

  A dry run does not read a remote root: it lists every job.
  """
  todo = []
  for i, job in enumerate(jobs, 1):
    if dry_run and is_remote(job.workdir):
      todo.append(job)
    elif run_dir.is_finished(job.workdir):
      print(f"[{i}/{len(jobs)}] skip {job.name}: {run_dir.results_path(job.workdir)} "
            "exists", file=out, flush=True)
    else:
      todo.append(job)
  return todo


# ------------------------------------------------------------------ local runs

class _Children:
  """The running training processes, so that a SIGTERM reaches all of them."""

  def __init__(self):
    self._procs: set[subprocess.Popen] = set()
    self._lock = threading.Lock()
    self.stopping = False

  def add(self, proc):
    with self._lock:
      self._procs.add(proc)

  def remove(self, proc):
    with self._lock:
      self._procs.discard(proc)

  def terminate(self):
    """Preempts every running point: each saves a checkpoint and exits."""
    self.stopping = True
    with self._lock:
      for proc in self._procs:
        proc.send_signal(signal.SIGTERM)


CHILDREN = _Children()


def _run_one(job: Job, python: str, out) -> tuple[bool, float]:
  """Trains one job here; (finished with results, seconds)."""
  start = time.time()
  log = run_dir.log_path(job.workdir)
  log.parent.mkdir(parents=True, exist_ok=True)
  command = [python, *job.train_args()]
  print(f"start {job.name}: {shlex.join(command)}\n      log: {log}", file=out, flush=True)
  with log.open("a") as f:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT)
    CHILDREN.add(proc)
    returncode = proc.wait()
    CHILDREN.remove(proc)
  seconds = time.time() - start
  if returncode != 0:
    tail = "".join(log.read_text().splitlines(True)[-5:])
    print(f"FAILED {job.name} (exit status {returncode}, {seconds:.0f} s); last lines "
          f"of {log}:\n{tail}", file=out, flush=True)
    return False, seconds
  if not run_dir.is_finished(job.workdir):
    print(f"stopped {job.name} after {seconds:.0f} s without results (preempted?); "
          "run the sweep again to resume it", file=out, flush=True)
    return False, seconds
  results = run_dir.read_results(job.workdir)
  top1, source = results.top1
  print(f"done {job.name} in {seconds:.0f} s: top-1 {100 * top1:.1f}% ({source})",
        file=out, flush=True)
  return True, seconds


def run_local(jobs: list[Job], *, python: str = sys.executable, parallel: int = 1,
              out=None) -> list[str]:
  """Trains `jobs` here, `parallel` at a time; the names of those that did not finish."""
  out = out or sys.stdout
  failed = []
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = {}
    for job in jobs:
      futures[pool.submit(_run_if_not_stopping, job, python, out)] = job
    for future in concurrent.futures.as_completed(futures):
      if not future.result():
        failed.append(futures[future].name)
  order = [j.name for j in jobs]
  return sorted(failed, key=order.index)


def _run_if_not_stopping(job: Job, python: str, out) -> bool:
  if CHILDREN.stopping:
    return False
  return _run_one(job, python, out)[0]


# ------------------------------------------------------------------ TPU runs

def point_ssh_command(job: Job, tpu_slice: tpu.Slice, version: str) -> list[str]:
  """The gcloud ssh command that trains `job` on every worker of `tpu_slice`."""
  script = tpu.remote_script(job.train_args(distributed=True), job.workdir, version,
                             job.name)
  return tpu.ssh_command(tpu_slice, script)


def build_archive(version: str, directory: str) -> str:
  """`git archive` of HEAD into `directory` (local, offline): the code the workers get."""
  path = os.path.join(directory, tpu.archive_name(version))
  subprocess.run(["git", "archive", "--format=tar.gz", "-o", path, "HEAD"], cwd=REPO,
                 check=True)
  return path


def run_tpu(jobs: list[Job], slices: list[tpu.Slice], version: str, archive: str,
            out=None) -> list[str]:
  """Copies the code to each slice, then trains the jobs there, one per slice at a time."""
  out = out or sys.stdout
  todo: queue.Queue = queue.Queue()
  for job in jobs:
    todo.put(job)
  failed, lock = [], threading.Lock()

  def work(tpu_slice: tpu.Slice):
    if subprocess.call(tpu.copy_code_command(tpu_slice, archive)) != 0:
      print(f"{tpu_slice.name}: copying the code failed; it takes no points", file=out)
      return
    while True:
      try:
        job = todo.get_nowait()
      except queue.Empty:
        return
      print(f"{tpu_slice.name}: start {job.name}", file=out, flush=True)
      status = subprocess.call(point_ssh_command(job, tpu_slice, version))
      if status != 0 or not run_dir.is_finished(job.workdir):
        print(f"{tpu_slice.name}: {job.name} ended without results (exit status "
              f"{status}); its log is in {job.workdir}/ and ~/mobilenet-jax-logs on the "
              "workers. If only the connection dropped, the run goes on: launch again "
              "later to wait for it.", file=out, flush=True)
        with lock:
          failed.append(job.name)
      else:
        print(f"{tpu_slice.name}: done {job.name}", file=out, flush=True)

  threads = [threading.Thread(target=work, args=(s,)) for s in slices]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  failed += [job.name for job in list(todo.queue)]  # No slice could take them.
  return failed


# ------------------------------------------------------------------ entry point

_SWEEP = flags.DEFINE_enum("sweep", None, sweeps.SWEEP_NAMES, "Which sweep to run.")
_ROOT = flags.DEFINE_string("root", None, "Each point's workdir is ROOT/<point name>.")
_ONLY = flags.DEFINE_list("only", [], "Run only these points (names as listed by "
                          "python -m experiments.sweeps).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands; run and write nothing.")
_LOCAL_SMOKE = flags.DEFINE_bool(
    "local_smoke", False, "Shrink every point to a CPU smoke run (experiments/smoke.py).")
_SMOKE_IMAGES = flags.DEFINE_integer("smoke_images", smoke.DEFAULT_IMAGES,
                                     "Training images per point in smoke mode.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Train every point with seeds 0..N-1 "
                              "(workdirs <point>, <point>_seed1, ...).")
_PROXY = flags.DEFINE_enum("proxy", None, list(proxy.PROXIES), "Train the paper "
                           "sweep's points on this small dataset (experiments/proxy.py).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Local points run at once.")
_PYTHON = flags.DEFINE_string("python", sys.executable,
                              "The local Python that trains (local runs only).")
_TPU = flags.DEFINE_string("tpu", None, "TPU VM slice name(s), comma-separated.")
_ZONE = flags.DEFINE_string("zone", None, "The TPU VMs' zone (with --tpu).")
_PROJECT = flags.DEFINE_string("project", None, "The TPU VMs' project (with --tpu).")
flags.mark_flags_as_required(["sweep", "root"])


def _commands(jobs, slices, version) -> dict[str, list[str]]:
  """Each job's command: local, or its ssh command on the slice it goes to first."""
  if not slices:
    return {job.name: [_PYTHON.value, *job.train_args()] for job in jobs}
  return {job.name: point_ssh_command(job, slices[i % len(slices)], version)
          for i, job in enumerate(jobs)}


def _print_plan(todo, slices, version, commands, out) -> None:
  """A dry run's output: the commands, one per line, ready to paste."""
  if slices:
    archive = tpu.archive_name(version)
    print(f"git archive --format=tar.gz -o {archive} HEAD", file=out)
    for tpu_slice in slices:
      print(shlex.join(tpu.copy_code_command(tpu_slice, archive)), file=out)
  for job in todo:
    print(shlex.join(commands[job.name]), file=out)


def main(argv):
  """absl entry point: argv[1:] (what follows "--") goes to every point."""
  out = sys.stdout
  slices = tpu.parse_slices(_TPU.value, _ZONE.value, _PROJECT.value) if _TPU.value else []
  if slices and (_LOCAL_SMOKE.value or not is_remote(_ROOT.value)):
    raise app.UsageError("--tpu trains full points in a root every host sees: give a "
                         "gs:// --root and no --local_smoke.")
  if _PROXY.value and _LOCAL_SMOKE.value:
    raise app.UsageError("--proxy and --local_smoke are two ways to shrink a sweep: "
                         "give one.")
  jobs = make_jobs(_SWEEP.value, _ROOT.value, local_smoke=_LOCAL_SMOKE.value,
                   smoke_images=_SMOKE_IMAGES.value, extra_args=tuple(argv[1:]),
                   only=tuple(_ONLY.value), seeds=_SEEDS.value, proxy_name=_PROXY.value)
  todo = pending(jobs, out, dry_run=_DRY_RUN.value)
  if _LOCAL_SMOKE.value:
    estimates = [smoke.estimate(ml_collections.ConfigDict(j.full_config)) for j in todo]
    print(smoke.format_estimate(estimates, _PARALLEL.value), file=out, flush=True)
  elif _PROXY.value and not slices:
    print(proxy.format_estimate(todo, _PROXY.value, _PARALLEL.value), file=out, flush=True)
  version = code_version()
  commands = _commands(jobs, slices, version)
  if _DRY_RUN.value:
    _print_plan(todo, slices, version, commands, out)
    return
  manifest.write(_ROOT.value, manifest.build(
      _SWEEP.value, jobs, commands, version, smoke=_LOCAL_SMOKE.value,
      smoke_images=_SMOKE_IMAGES.value if _LOCAL_SMOKE.value else None,
      seeds=_SEEDS.value, proxy=_PROXY.value,
      extra_args=list(argv[1:]), tpu=[dataclasses.asdict(s) for s in slices]))
  start = time.time()
  signal.signal(signal.SIGTERM, lambda *_: CHILDREN.terminate())
  if slices:
    archive = build_archive(version, os.path.abspath("."))
    failed = run_tpu(todo, slices, version, archive, out)
  else:
    try:
      failed = run_local(todo, python=_PYTHON.value, parallel=_PARALLEL.value, out=out)
    except KeyboardInterrupt:
      CHILDREN.terminate()
      raise
  elapsed = time.time() - start
  if failed:
    print(f"{len(failed)} of {len(jobs)} points did not finish: {', '.join(failed)} "
          f"({elapsed:.0f} s)", flush=True)
    sys.exit(1)
  print(f"All {len(jobs)} points of {_SWEEP.value} have results under {_ROOT.value} "
        f"({len(todo)} trained in {elapsed:.0f} s); compare them with: "
        f"python -m experiments.compare --root={_ROOT.value}", flush=True)


if __name__ == "__main__":
  errors.run(main)  # A bad sweep, point, seed count or proxy: one error line.
