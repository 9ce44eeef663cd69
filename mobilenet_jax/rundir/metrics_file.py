"""metrics.jsonl: one JSON object per logged step, {"step", "split", ...scalars}.

Append-only, so the one damage it can take is a torn last line (a kill or a full
disk in the middle of a write). Readers and the resuming writer drop such a tail with
a warning and keep every row before it; a bad row anywhere else is an error that
names the file and line.
"""

from __future__ import annotations

import json
import logging

from mobilenet_jax.errors import UserError
from mobilenet_jax.rundir import layout


class MetricsFileError(UserError):
  """metrics.jsonl has a damaged row before its last line."""


def _parse(lines: list[str], source) -> list[dict]:
  rows = []
  numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
  for position, (number, line) in enumerate(numbered):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or "step" not in row:
        raise ValueError("not a metrics row")
    except ValueError as error:
      if position == len(numbered) - 1:
        logging.warning("%s: dropped its torn last line %d (%s); the %d rows before it "
                        "are kept.", source, number, error, len(rows))
        break
      raise MetricsFileError(
          f"{source} line {number} is not a metrics row ({error}); only a torn last "
          "line can be repaired: move the file aside to start its metrics afresh."
      ) from None
    rows.append(row)
  return rows


def read_rows(workdir, split: str | None = None) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl (of `split` only, if given), in order."""
  path = layout.metrics_path(workdir)
  if not path.exists():
    return []
  rows = _parse(path.read_text().splitlines(), path)
  return [r for r in rows if split is None or r.get("split") == split]


def keep_through(workdir, step: int) -> None:
  """Rewrites the file with the rows up to `step` only (a resumed run writes the
  rows after its checkpoint again); drops a torn tail."""
  path = layout.metrics_path(workdir)
  if not path.exists():
    return
  kept = [row for row in read_rows(workdir) if row["step"] <= step]
  partial = path.parent / (path.name + ".partial")
  partial.write_text("".join(json.dumps(row) + "\n" for row in kept))
  partial.replace(path)


def append_row(workdir, row: dict) -> None:
  """Appends one row (process 0 only)."""
  with layout.metrics_path(workdir).open("a") as f:
    f.write(json.dumps(row) + "\n")
