"""ROOT/manifest.json: what the launcher started under a sweep's root, and with what.

It records the sweep, the code version, the launch settings and, per point, its config
spec, overrides, workdir, command, the full config it trains and the full-size config
it stands for (they differ in smoke mode), so that every point can be rerun and
compared without the sweep definitions that made it.

A root belongs to one sweep: launching another sweep into it is refused (`check`), and
so is relaunching a point whose recorded settings differ from what it would train now,
so the manifest never records settings that its runs were not trained with.
"""

from __future__ import annotations

import datetime
import json

from etils import epath

from mobilenet_jax import errors

from . import point_state, sweeps

MANIFEST_FILE = "manifest.json"


class RootMismatch(errors.UserError):
  """The root holds another sweep."""


def build(sweep: str, jobs, commands: dict[str, list[str]], code: dict,
          **settings) -> dict:
  """The manifest of launching `jobs` (launch.Job) of `sweep` with `commands`; `code`:
  code_archive.CodeVersion.to_json() (which commit, and whether HEAD or the working
  tree)."""
  definition = sweeps.get_sweep(sweep)
  return {
      "sweep": sweep, "kind": definition.kind, "description": definition.description,
      "code_version": code["name"], "code": code,
      "written": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      **settings,
      "points": [{"name": j.name, "config": j.config, "args": list(j.args),
                  "workdir": j.workdir, "command": commands[j.name],
                  "full_config": j.full_config, "point_config": j.point_config}
                 for j in jobs],
  }


def check(root: str, sweep: str, jobs) -> None:
  """Refuses a launch that would make ROOT's manifest lie.

  Raises:
    RootMismatch: ROOT holds another sweep.
    point_state.PointMismatch: a point of `jobs` is recorded with other settings.
  """
  recorded = read(root)
  if recorded is None:
    return
  if recorded.get("sweep") != sweep:
    raise RootMismatch(
        f"{root} holds the sweep {recorded.get('sweep')!r} (its {MANIFEST_FILE}), not "
        f"{sweep!r}: a root belongs to one sweep; give this launch its own --root.")
  points = {p["name"]: p for p in recorded.get("points", [])}
  for job in jobs:
    if job.name in points and "full_config" in points[job.name]:
      mismatches = point_state.settings_mismatches(job.full_config,
                                                   points[job.name]["full_config"])
      if mismatches:
        raise point_state.mismatch_error(job.name, f"{root}/{MANIFEST_FILE}",
                                         mismatches)


def write(root: str, data: dict) -> None:
  """Writes ROOT/manifest.json, keeping the points of earlier launches into ROOT
  (call `check` first)."""
  path = epath.Path(root) / MANIFEST_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists():
    old_data = json.loads(path.read_text())
    if old_data.get("sweep") != data["sweep"]:
      raise RootMismatch(f"{path} belongs to the sweep {old_data.get('sweep')!r}.")
    old = {p["name"]: p for p in old_data.get("points", [])}
    old.update({p["name"]: p for p in data["points"]})
    data = {**data, "points": list(old.values())}
  path.write_text(json.dumps(data, indent=2))


def read(root: str) -> dict | None:
  """ROOT/manifest.json, or None."""
  path = epath.Path(root) / MANIFEST_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise RootMismatch(f"{path} is not valid JSON ({e}): restore it, or move it away "
                       "to launch into this root afresh.") from None
