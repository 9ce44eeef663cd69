"""One input pipeline in a process of its own, timed on demand (the data benchmark's).

  python path/to/bench_worker.py '<json spec>'

Run as a file, not a module, so that `mobilenet_jax` is whichever copy PYTHONPATH
names: the data benchmark times today's pipeline from another checkout this way.
The process pins itself to the spec's CPU cores before TensorFlow starts (its thread
pools then size themselves to them), builds the pipeline, reads `warmup` batches,
prints "ready", then answers each "measure N" line on stdin with one JSON line:
{"images": ..., "seconds": ..., "cpu_seconds": ...} for N batches (wall-clock time,
and CPU time of all the process's threads), after first reading untimed for
`drain_seconds` (what the pipeline buffered while idle must not count).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import time


def _pipeline(spec):
  """An endless iterator of numpy batches for the spec."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  data_config = ml_collections.ConfigDict(spec["data"])
  if spec["pipeline"] == "reference":
    location = spec["reference_file"]
    module_spec = importlib.util.spec_from_file_location("reference_pipeline", location)
    reference = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(reference)
    split = data_config.train_split if spec["train"] else data_config.eval_split
    return iter(reference.dataset(data_config, spec["batch"], spec["train"], split)
                .as_numpy_iterator())
  from mobilenet_jax import data  # pylint: disable=g-import-not-at-top
  if spec["train"]:
    return data.train_batches(data_config, spec["batch"], seed=0, process_index=0,
                              process_count=1)

  def eval_forever():
    while True:
      yield from data.eval_batches(data_config, spec["batch"], process_index=0,
                                   process_count=1)
  return eval_forever()


def _images(batch) -> int:
  # Eval padding is not work done: count real examples only.
  return int(batch["mask"].sum()) if "mask" in batch else len(batch["label"])


def _cpu_seconds() -> float:
  """CPU time of the whole process (all its threads), user and system."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main() -> None:
  spec = json.loads(sys.argv[1])
  os.sched_setaffinity(0, spec["cores"])
  batches = _pipeline(spec)
  for _ in range(spec["warmup"]):
    next(batches)
  print("ready", flush=True)
  for line in sys.stdin:
    command = line.split()
    if not command or command[0] != "measure":
      break
    end = time.perf_counter() + spec["drain_seconds"]
    while time.perf_counter() < end:
      next(batches)
    images, start, cpu_start = 0, time.perf_counter(), _cpu_seconds()
    for _ in range(int(command[1])):
      images += _images(next(batches))
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    print(json.dumps({"images": images, "seconds": seconds, "cpu_seconds": cpu_seconds}),
          flush=True)


if __name__ == "__main__":
  main()
