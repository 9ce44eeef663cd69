"""Every file name of a run directory, stated once.

  WORKDIR/
    checkpoints/<step>/        Orbax checkpoints: state/ and meta/ (checkpoints.py)
    checkpoints/corrupt-<step>/ unreadable steps set aside, never deleted
    metrics.jsonl              one JSON object per logged step (metrics_file.py)
    results.json               written once, when training ends (results.py)
    train.log                  the run's console output, when the launcher started it
    run.lock                   who trains here now (lock.py)
    events.out.tfevents.*      TensorBoard (clu writes them; the name is clu's)

Paths may be local or `gs://...` (etils.epath). Nothing outside this package spells
these names: callers ask for the path.
"""

from __future__ import annotations

from etils import epath

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
LOCK_FILE = "run.lock"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_PREFIX = "corrupt-"  # checkpoints/corrupt-<step>/


def path(workdir) -> epath.Path:
  """`workdir` as a path object (local or gs://)."""
  return epath.Path(str(workdir))


def results_path(workdir) -> epath.Path:
  """WORKDIR/results.json."""
  return path(workdir) / RESULTS_FILE


def metrics_path(workdir) -> epath.Path:
  """WORKDIR/metrics.jsonl."""
  return path(workdir) / METRICS_FILE


def log_path(workdir) -> epath.Path:
  """WORKDIR/train.log."""
  return path(workdir) / LOG_FILE


def lock_path(workdir) -> epath.Path:
  """WORKDIR/run.lock."""
  return path(workdir) / LOCK_FILE


def checkpoint_dir(workdir) -> str:
  """WORKDIR/checkpoints, as the string Orbax takes."""
  return f"{str(workdir).rstrip('/')}/{CHECKPOINT_DIR}"


def is_run_dir(workdir) -> bool:
  """Whether `workdir` holds any of a run directory's files (a run, finished or not)."""
  root = path(workdir)
  return root.is_dir() and any(
      (root / name).exists()
      for name in (RESULTS_FILE, METRICS_FILE, LOG_FILE, CHECKPOINT_DIR))


def step_dirs(workdir) -> list[int]:
  """The step numbers with a directory under checkpoints/ (committed or not read),
  ascending; [] if there is none. Cheap: lists one directory, opens nothing."""
  root = path(checkpoint_dir(workdir))
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def corrupt_step_path(workdir, step: int) -> str:
  """Where an unreadable step is set aside: checkpoints/corrupt-<step>."""
  return f"{checkpoint_dir(workdir)}/{CORRUPT_PREFIX}{step}"
