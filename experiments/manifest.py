"""ROOT/manifest.json: what the launcher started under a sweep's root, and with what.

It records the sweep, the code version, the launch settings and, per point, its config
spec, overrides, workdir, command, the full config it trains and the full-size config
it stands for (they differ in smoke mode), so that every point can be rerun and
compared without the sweep definitions that made it.
"""

from __future__ import annotations

import datetime
import json

from etils import epath

from . import sweeps

MANIFEST_FILE = "manifest.json"


def build(sweep: str, jobs, commands: dict[str, list[str]], version: str,
          **settings) -> dict:
  """The manifest of launching `jobs` (launch.Job) of `sweep` with `commands`."""
  definition = sweeps.get_sweep(sweep)
  return {
      "sweep": sweep, "kind": definition.kind, "description": definition.description,
      "code_version": version,
      "written": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      **settings,
      "points": [{"name": j.name, "config": j.config, "args": list(j.args),
                  "workdir": j.workdir, "command": commands[j.name],
                  "full_config": j.full_config, "point_config": j.point_config}
                 for j in jobs],
  }


def write(root: str, data: dict) -> None:
  """Writes ROOT/manifest.json, keeping the points of earlier launches into ROOT."""
  path = epath.Path(root) / MANIFEST_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists():
    old = {p["name"]: p for p in json.loads(path.read_text()).get("points", [])}
    old.update({p["name"]: p for p in data["points"]})
    data = {**data, "points": list(old.values())}
  path.write_text(json.dumps(data, indent=2))


def read(root: str) -> dict | None:
  """ROOT/manifest.json, or None."""
  path = epath.Path(root) / MANIFEST_FILE
  return json.loads(path.read_text()) if path.exists() else None
