"""One exact pass over an eval split: every example counted once, on any mesh."""

from __future__ import annotations

from typing import Callable

import jax

from mobilenet_jax import data
from mobilenet_jax.train import sharding


def evaluate(eval_step: Callable, variables: dict, data_config, batch_size: int,
             mesh: jax.sharding.Mesh, split: str | None = None) -> dict:
  """{"loss", "top1", "top5", "num_examples"} of `variables` over one pass of `split`.

  `eval_step` is the jitted `step.make_eval_step(model)`; it returns masked sums per
  batch, which are added on the host in float64 so that counts stay exact.
  """
  totals = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
  for local in data.eval_batches(data_config, batch_size, split):
    sums = jax.device_get(eval_step(variables, sharding.global_batch(local, mesh)))
    for key, value in sums.items():
      totals[key] += float(value)
  count = totals["count"]
  if not count:
    raise ValueError(f"the eval split {split or data_config.eval_split!r} is empty.")
  return {"loss": totals["loss"] / count, "top1": totals["top1"] / count,
          "top5": totals["top5"] / count, "num_examples": int(round(count))}
