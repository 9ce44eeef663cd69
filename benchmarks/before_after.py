r"""The before/after table of benchmarks/RESULTS.md, measured in one sitting.

  python -m benchmarks.before_after --before=7d917ca --out=/tmp/before_after \
      [--rounds=2] [--default_run]

Exports the `--before` commit into a temporary directory and runs
`python -m mobilenet_jax.benchmark` from it and from this checkout, alternating
before / after per row and per round, so that a machine whose load changes slows
both alike. Rows: V1 and V2 at 128, batch 32, beside PyTorch (--torch); V1 with
`block=full_conv` (Table 4's model, no PyTorch twin); and the default config's train
step, for its compile times. Each run's JSON (with the 1-minute load average at its
start and end) lands in --out; the script prints the Markdown table, the median over
the rounds per cell. With --default_run it also times the README's first command
(`python -m mobilenet_jax.main --config=configs/default.py`), before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from mobilenet_jax import cli

from mobilenet_jax.rundir import results as run_results

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {
    "V1 1.0 128": ["--config=configs/mobilenet_v1.py:res=128", "--batch_size=32",
                   "--torch"],
    "V2 1.0 128": ["--config=configs/mobilenet_v2.py:res=128", "--batch_size=32",
                   "--torch"],
    "V1 full_conv 128": ["--config=configs/mobilenet_v1.py:res=128", "--batch_size=32",
                         "--config.model.block=full_conv", "--steps=3"],
    "default.py": ["--config=configs/default.py", "--batch_size=64"],
}
KEYS = ("train_images_per_sec", "latency_ms_batch1", "compile_s", "compile_cached_s")


def export(commit: str, directory: str) -> str:
  """The tree of `commit` under `directory` (git archive: no history, no worktree)."""
  archive = subprocess.run(["git", "-C", _REPO, "archive", commit], check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
  return directory


def benchmark(tree: str, args: list[str], json_path: str) -> dict:
  """One benchmark process in `tree`; its JSON plus the load average around it."""
  load_start = os.getloadavg()[0]
  env = dict(os.environ, PYTHONPATH=tree)
  subprocess.run([sys.executable, "-m", "mobilenet_jax.benchmark",
                  *_flags_of_tree(tree, args), f"--json={json_path}"], cwd=tree,
                 env=env, check=True)
  with open(json_path) as f:
    result = json.load(f)
  result["load"] = (load_start, os.getloadavg()[0])
  return result


def _flags_of_tree(tree: str, args: list[str]) -> list[str]:
  """`args` as the benchmark of `tree` names them: before the shared command-line
  module (mobilenet_jax/cli.py), --batch_size was --batch."""
  if os.path.exists(os.path.join(tree, "mobilenet_jax", "cli.py")):
    return list(args)
  return [a.replace("--batch_size=", "--batch=", 1) for a in args]


def default_run(tree: str) -> dict:
  """Wall time and final test top-1 of the README's first command in `tree`."""
  load_start = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as workdir:
    start = time.time()
    subprocess.run([sys.executable, "-m", "mobilenet_jax.main",
                    "--config=configs/default.py", f"--workdir={workdir}"], cwd=tree,
                   env=dict(os.environ, PYTHONPATH=tree), check=True)
    wall = time.time() - start
    top1 = run_results.read_results(workdir).final["raw"].top1
  return {"wall_s": wall, "top1": top1, "load": (load_start, os.getloadavg()[0])}


def _cell(runs: list[dict], key: str, side: str = "") -> str:
  values = [(r.get(side, {}) if side else r).get(key) for r in runs]
  values = [v for v in values if v is not None]
  return f"{statistics.median(values):.2f}" if values else "-"


def table(results: dict) -> str:
  """Markdown: per row, before and after, JAX figures, PyTorch and the ratios."""
  lines = ["| row | code | train img/s | PyTorch img/s | train ratio | batch-1 ms | "
           "PyTorch ms | latency ratio | compile_s | compile_cached_s | load 1m |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for row, sides in results.items():
    for side, runs in sides.items():
      loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in (r["load"] for r in runs))
      lines.append(
          f"| {row} | {side} | {_cell(runs, 'train_images_per_sec')} | "
          f"{_cell(runs, 'train_images_per_sec', 'torch')} | "
          f"{_cell(runs, 'train_images_per_sec', 'ratios')} | "
          f"{_cell(runs, 'latency_ms_batch1')} | "
          f"{_cell(runs, 'latency_ms_batch1', 'torch')} | "
          f"{_cell(runs, 'latency_ms_batch1', 'ratios')} | {_cell(runs, 'compile_s')} | "
          f"{_cell(runs, 'compile_cached_s')} | {loads} |")
  return "\n".join(lines)


def define_flags() -> None:
  """The flags of the before/after benchmark."""
  flags.DEFINE_string("before", "7d917ca", "The commit to compare against.")
  flags.DEFINE_string("out", "/tmp/before_after", "Where each run's JSON goes.")
  flags.DEFINE_integer("rounds", 2, "Before/after pairs per row.")
  flags.DEFINE_bool("default_run", False, "Also time the README's first command.")


def main(argv):
  """absl entry point: the before/after table (and the first command's times)."""
  del argv
  f = flags.FLAGS
  os.makedirs(f.out, exist_ok=True)
  with tempfile.TemporaryDirectory() as before_dir:
    trees = {"before": export(f.before, before_dir), "after": _REPO}
    results = {row: {side: [] for side in trees} for row in ROWS}
    for round_index in range(f.rounds):
      for row, args in ROWS.items():
        for side, tree in trees.items():
          name = f"{row.replace(' ', '_')}-{side}-{round_index}.json"
          results[row][side].append(
              benchmark(tree, args, os.path.join(f.out, name)))
          print(f"{row} {side} round {round_index}: done", flush=True)
    print(table(results))
    if f.default_run:
      for side, tree in trees.items():
        run = default_run(tree)
        print(f"README first command, {side}: {run['wall_s']:.0f} s, test top-1 "
              f"{run['top1']:.4f}, load {run['load'][0]:.1f}-{run['load'][1]:.1f}")


if __name__ == "__main__":
  cli.run(main, define_flags)
