"""Whether a sweep point is finished, judged by what its workdir holds.

A point is finished when ROOT/<name>/results.json parses and the config it records has
the point's settings. A truncated or otherwise unreadable results.json is not a
finished point (relaunching resumes the run, which rewrites it); results of a run with
other settings, under the point's name, stop the launch with one line: skipping them
would report one run as another.
"""

from __future__ import annotations

import json

from mobilenet_jax import errors
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout
from mobilenet_jax.rundir import results as run_results


class PointMismatch(errors.UserError):
  """A point's workdir (or the root's manifest) holds a run with other settings."""


def settings_mismatches(expected: dict, stored: dict, limit: int = 3) -> list[str]:
  """'key: stored vs expected' for each identity entry that differs (at most `limit`).

  Entries the point leaves unset (None: chosen by the trainer, e.g. the BatchNorm
  momentum from the run length) match whatever the run chose.
  """
  want, have = run_identity.identity(expected), run_identity.identity(stored)
  out = []
  for key in sorted(set(want) | set(have)):
    if want.get(key) is None and key in want:
      continue
    if json.dumps(want.get(key), sort_keys=True) != json.dumps(have.get(key),
                                                                sort_keys=True):
      out.append(f"{key}: {have.get(key, '<unset>')!r} there vs "
                 f"{want.get(key, '<unset>')!r} now")
  return out[:limit]


def mismatch_error(name: str, where: str, mismatches: list[str]) -> PointMismatch:
  """The one-line error for a point whose `where` records other settings."""
  return PointMismatch(
      f"point {name}: {where} records other settings ({'; '.join(mismatches)}). A "
      "point's name stands for its settings: launch into a new --root, or launch "
      "with the settings the root was made with.")


def is_finished(job) -> bool:
  """Whether `job` (a launch.Job) has readable results with its settings.

  Raises:
    PointMismatch: its results.json records a run with other settings.
  """
  if not layout.results_path(job.workdir).exists():
    return False
  try:
    results = run_results.read_results(job.workdir)
  except run_results.ResultsError:
    return False
  mismatches = settings_mismatches(job.full_config, results.config)
  if mismatches:
    raise mismatch_error(job.name, str(layout.results_path(job.workdir)), mismatches)
  return True


def unreadable_results(job) -> str | None:
  """Why `job`'s results.json cannot be read, if it exists and cannot; else None."""
  if not layout.results_path(job.workdir).exists():
    return None
  try:
    run_results.read_results(job.workdir)
  except run_results.ResultsError as e:
    return str(e)
  return None
