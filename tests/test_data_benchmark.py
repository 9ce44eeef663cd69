"""The data benchmark at a tiny size: every pipeline timed, ratios, the verdict.

Training only: each pipeline is a process that imports TensorFlow (seconds each), and
the evaluation side differs only in which batches the same worker reads.
"""

import json
import os
import subprocess
import sys

from mobilenet_jax.data import imagenet_like
from tests import training_runs


def test_benchmark_times_this_today_and_the_reference(tmp_path):
  input_dir = str(tmp_path / "input")
  imagenet_like.prepare(input_dir, num_train=16, num_val=4, num_classes=2)
  out = str(tmp_path / "result.json")
  # "today" is this checkout again: what counts is that it runs from its own path.
  proc = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.data.benchmark", "--config=configs/default.py",
       "--config.data.cache=False", f"--input_dir={input_dir}",
       f"--today_src={training_runs.REPO}", "--forms=tfds", "--splits=train",
       "--rounds=2", "--batches=1",
       "--batch_size=4", "--warmup=1", "--drain_seconds=0", "--step_steps=1",
       f"--json={out}"],
      cwd=training_runs.REPO, env=training_runs.env_with_devices(1), capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    result = json.load(f)
  assert set(result["forms"]["tfds"]) == {"train"}
  for metric in ("cpu", "wall"):
    summary = result["forms"]["tfds"]["train"][metric]
    for name in ("this", "reference", "today", "this/today", "this/reference"):
      assert summary[name]["median"] > 0 and len(summary[name]["rounds"]) == 2, name
  assert result["input_bound"]["bound"] in ("input", "step")
  assert result["input_bound"]["host_cores"] == len(os.sched_getaffinity(0))
  assert "this/reference" in proc.stdout and "-bound" in proc.stdout
