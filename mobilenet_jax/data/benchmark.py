r"""Input pipeline throughput per CPU core, beside a reference pipeline, in one run.

  python -m mobilenet_jax.data.benchmark                      # ImageNet-like JPEGs
  python -m mobilenet_jax.data.benchmark --today_src=/tmp/old_checkout --rounds=5
  python -m mobilenet_jax.data.benchmark --config=configs/default.py --use_config_data

Measures training and evaluation images/second per core of
- "this": this package's pipeline (`data.train_batches` / `data.eval_batches`);
- "reference": one written the way the flax ImageNet example's is
  (data/reference_pipeline.py);
- "today", with --today_src: the same calls in another checkout of this project
  (the code before a change), run from there;
on the ImageNet-like JPEGs of data/imagenet_like.py (made on first use under
--input_dir), both as a prepared TFDS dataset and as an image folder; or, with
--use_config_data, on the config's own dataset.

Each pipeline runs in a process of its own pinned to the same --cores CPU cores
(data/bench_worker.py), and the pipelines are timed in turn, round after round, so
that a machine shared with other work slows them alike: compare the ratios, which
are taken within a round (median and range over rounds). Load averages before and
after are printed. Then, unless --step_steps=0, the config's train step is timed on
this host's devices and compared with the pipeline's rate on all this host's cores
(the per-core rate times the core count: an estimate) to say which bounds a run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import flags
from ml_collections import config_flags

from mobilenet_jax import cli, errors

FLAGS = flags.FLAGS

def define_flags() -> None:
  """The flags of the input-pipeline benchmark."""
  # Optional here, unlike the other tools' --config (cli.define_config).
  config_flags.DEFINE_config_file(
      "config", None, "Config file (with args); default configs/mobilenet_v1.py (V1 "
      "1.0 at 224).", lock_config=False)
  flags.DEFINE_string("input_dir",
                      os.path.join(tempfile.gettempdir(), "mobilenet_jax_imagenet_like"),
                      "Where the ImageNet-like input is (made on first use).")
  flags.DEFINE_bool("use_config_data", False, "Measure the config's dataset instead.")
  flags.DEFINE_string("today_src", None, "A checkout of this project to time as 'today'.")
  flags.DEFINE_integer("cores", 1, "CPU cores each pipeline is pinned to.")
  flags.DEFINE_integer("rounds", 3, "Timed rounds over all pipelines.")
  flags.DEFINE_integer("batches", 8, "Batches per timed measurement.")
  cli.define_batch_size(64, "Batch size of every pipeline.")
  flags.DEFINE_integer("warmup", 2, "Untimed batches when a pipeline starts.")
  flags.DEFINE_float("drain_seconds", 1.0, "Untimed reading before each measurement.")
  flags.DEFINE_integer("step_steps", 3, "Train steps timed for the verdict; 0 skips it.")
  cli.define_json()
  flags.DEFINE_list("forms", ["tfds", "image_folder"],
                    "ImageNet-like forms to measure: tfds, image_folder.")
  flags.DEFINE_list("splits", ["train", "eval"], "Splits to measure.")


_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))


def _default_config():
  sys.path.insert(0, _REPO)
  from configs import mobilenet_v1  # pylint: disable=g-import-not-at-top
  return mobilenet_v1.get_config()


def data_configs(config, use_config_data: bool, input_dir: str) -> dict:
  """{form name: data config dict} of the inputs to measure."""
  if use_config_data:
    return {config.data.name: config.data.to_dict()}
  from mobilenet_jax.data import imagenet_like  # pylint: disable=g-import-not-at-top
  forms = {}
  for name, data_dir in imagenet_like.prepare(input_dir).items():
    form = config.data.to_dict()
    form.update(name=name, data_dir=data_dir, train_split="train", eval_split="val")
    form_name = "tfds" if name == imagenet_like.NAME else "image_folder"
    if form_name in FLAGS.forms:
      forms[form_name] = form
  return forms


class Worker:
  """One pipeline in its own pinned process (data/bench_worker.py)."""

  def __init__(self, spec: dict, pythonpath: str):
    env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2")
    self.log = tempfile.TemporaryFile("w+")  # A pipe could fill up and stall it.
    self.process = subprocess.Popen(
        [sys.executable, os.path.join(_HERE, "bench_worker.py"), json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        env=env, cwd=pythonpath)
    self._expect("ready")

  def _expect(self, start: str) -> str:
    line = self.process.stdout.readline()
    if not line.startswith(start):
      self.close()
      self.log.seek(0)
      raise RuntimeError(f"A benchmark worker failed: {self.log.read()[-3000:]}")
    return line

  def measure(self, batches: int) -> dict:
    """{"images", "seconds", "cpu_seconds"} of `batches` batches."""
    self.process.stdin.write(f"measure {batches}\n")
    self.process.stdin.flush()
    return json.loads(self._expect("{"))

  def close(self) -> None:
    self.process.kill()
    self.process.wait()


def _pipelines(today_src: str | None) -> dict:
  """{name: (worker kind, PYTHONPATH)}."""
  pipelines = {"this": ("package", _REPO), "reference": ("reference", _REPO)}
  if today_src:
    pipelines["today"] = ("package", os.path.abspath(today_src))
  return pipelines


def measure_form(form: dict, pipelines: dict, cores: list[int], train: bool) -> dict:
  """{metric: {pipeline: [rate per core, one per round]}} for one form and split.

  Metrics: "cpu", images per CPU-second of the pipeline's process (what a core
  yields: robust to other work on a shared machine), and "wall", images per second
  of wall-clock time divided by the pinned cores (lower wherever others share them).
  """
  workers = {}
  try:
    for name, (kind, path) in pipelines.items():
      spec = dict(pipeline=kind, data=form, train=train, batch=FLAGS.batch_size,
                  cores=cores, warmup=FLAGS.warmup, drain_seconds=FLAGS.drain_seconds,
                  reference_file=os.path.join(_HERE, "reference_pipeline.py"))
      workers[name] = Worker(spec, path)
    rates = {"cpu": {name: [] for name in workers}, "wall": {name: [] for name in workers}}
    for _ in range(FLAGS.rounds):
      for name, worker in workers.items():
        timing = worker.measure(FLAGS.batches)
        rates["cpu"][name].append(timing["images"] / timing["cpu_seconds"])
        rates["wall"][name].append(timing["images"] / timing["seconds"] / len(cores))
    return rates
  finally:
    for worker in workers.values():
      worker.close()


def ratios(rates: dict, numerator: str, denominator: str) -> list[float]:
  """Per-round ratios of two pipelines' rates (measured next to each other)."""
  return [a / b for a, b in zip(rates[numerator], rates[denominator])]


def _summary(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "rounds": values}


def summarize(rates: dict) -> dict:
  """Per metric: medians and ranges of the rates and of this/other ratios."""
  out = {}
  for metric, by_pipeline in rates.items():
    out[metric] = {name: _summary(values) for name, values in by_pipeline.items()}
    for other in ("today", "reference"):
      if other in by_pipeline:
        out[metric][f"this/{other}"] = _summary(ratios(by_pipeline, "this", other))
  return out


def step_images_per_sec(config, batch: int, steps: int) -> float:
  """The config's train step on this host's first device (mobilenet_jax.benchmark)."""
  from mobilenet_jax import benchmark  # pylint: disable=g-import-not-at-top
  result = benchmark.benchmark_jax(config, batch, steps, latency_runs=1, infer_runs=1)
  return result["train_images_per_sec"]


def format_report(result: dict) -> str:
  """The results as text: one block per form and split, then the verdict."""
  lines = [f"{result['cores']} core(s) per pipeline, batch {result['batch_size']}, "
           f"{result['rounds']} rounds of {result['batches']} batches; load average "
           f"before {result['load_before']}, after {result['load_after']}"]
  units = {"cpu": "images per CPU-second", "wall": "images/s per pinned core"}
  for form, splits in result["forms"].items():
    for split, metrics in splits.items():
      for metric, summary in metrics.items():
        for name, s in summary.items():
          ratio = "/" in name
          rounds = ", ".join(f"{v:,.2f}" if ratio else f"{v:,.0f}" for v in s["rounds"])
          value = f"{s['median']:.2f}x" if ratio else f"{s['median']:,.0f}"
          lines.append(f"{form:>12} {split:5} {metric:4} {name:15} {value:>7} "
                       f"{'' if ratio else units[metric]} (rounds: {rounds})")
  if result.get("input_bound"):
    lines.append(result["input_bound_line"])
  return "\n".join(lines)


def run(config, forms: dict, today_src: str | None, cores: list[int]) -> dict:
  """Measures every form and split; the results dict (see format_report)."""
  result = dict(cores=len(cores), batch_size=FLAGS.batch_size, rounds=FLAGS.rounds,
                batches=FLAGS.batches, load_before=os.getloadavg(), forms={})
  pipelines = _pipelines(today_src)
  for form_name, form in forms.items():
    result["forms"][form_name] = {
        split: summarize(measure_form(form, pipelines, cores, split == "train"))
        for split in FLAGS.splits}
  result["load_after"] = os.getloadavg()
  if FLAGS.step_steps > 0:
    _add_verdict(result, config, form_name)
  return result


def _add_verdict(result: dict, config, form_name: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from mobilenet_jax.train import input_bound  # pylint: disable=g-import-not-at-top
  host_cores = len(os.sched_getaffinity(0))
  per_core = result["forms"][form_name]["train"]["cpu"]["this"]["median"]
  step = step_images_per_sec(config, FLAGS.batch_size, FLAGS.step_steps)
  bound = input_bound.verdict(per_core * host_cores, step, FLAGS.batches,
                              FLAGS.step_steps, jax.default_backend())
  result["input_bound"] = {**bound.to_json(), "host_cores": host_cores}
  result["input_bound_line"] = (f"{form_name}, this pipeline on all {host_cores} cores "
                                f"(images per CPU-second x cores): {bound.line()}")


def main(argv):
  del argv
  config = FLAGS.config or _default_config()
  available = sorted(os.sched_getaffinity(0))
  if not 1 <= FLAGS.cores <= len(available):
    raise errors.ConfigError(f"--cores={FLAGS.cores}: this process may use "
                             f"{len(available)} core(s); give 1 to {len(available)}.")
  if FLAGS.today_src and not os.path.isdir(os.path.join(FLAGS.today_src,
                                                         "mobilenet_jax")):
    raise errors.ConfigError(f"--today_src={FLAGS.today_src} holds no mobilenet_jax "
                             "package; give a checkout of this project.")
  forms = data_configs(config, FLAGS.use_config_data, FLAGS.input_dir)
  result = run(config, forms, FLAGS.today_src, available[:FLAGS.cores])
  cli.print_result(result, format_report(result), FLAGS.json)


def console_main():
  """`python -m mobilenet_jax.data.benchmark`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
