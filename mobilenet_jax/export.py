r"""A run directory -> TensorFlow SavedModel or TFLite (float32 or int8); the deployment table.

  python -m mobilenet_jax.export --workdir=runs/v1 --format=saved_model --out=/tmp/v1_sm
  python -m mobilenet_jax.export --workdir=runs/v1 --format=tflite --out=/tmp/v1.tflite
  python -m mobilenet_jax.export --workdir=runs/v1 --format=tflite --quantize=int8 \
      --out=/tmp/v1_int8.tflite
  python -m mobilenet_jax.export --workdir=runs/v1 --report [--threads=2]

The route (checked with jax 0.10.2, tensorflow-cpu 2.21, ai-edge-litert 2.3): jax2tf
still ships with JAX and serializes natively (the StableHLO of the function inside one
XlaCallModule op; its old non-native graph mode is deprecated), `tf.saved_model.save`
writes that, and the TFLite converter legalizes the StableHLO into TFLite builtins.
This is the path LiteRT documents for JAX models (ai.google.dev/edge/litert, "JAX
support overview": jax2tf -> SavedModel -> TFLite converter).

- The model is rebuilt with the XLA depthwise and 1x1 implementations: the CPU
  training paths (shifted slices, dot products) would lower to PAD/SLICE/MUL/ADD
  chains instead of DEPTHWISE_CONV_2D and CONV_2D, the ops mobile runtimes accelerate.
- The SavedModel's serving signature takes a batch of any size; TFLite models take a
  static batch of 1 (a polymorphic batch adds SHAPE/GATHER ops and stops the converter
  from folding BatchNorm into the convolutions).
- Inputs: float32 images in [-1, 1] (the eval preprocessing's output), or with
  --input=uint8 raw pixels normalized inside the model (x / 127.5 - 1). Output: class
  probabilities.
- int8: full-integer post-training quantization (int8 weights and activations, int8
  input and output tensors), calibrated on --calibration_images images of the run's
  own train split through its eval preprocessing (mobilenet_jax/data). With
  --input=uint8 the normalization (CAST, MUL, SUB) runs in float before the first
  QUANTIZE.
TFLite models run with the LiteRT interpreter (`ai-edge-litert`).
Installed with pip, the same program is `mobilenet-export`.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

from absl import app
from absl import flags
import jax
import numpy as np

from mobilenet_jax import cli
from mobilenet_jax import console
from mobilenet_jax import data
from mobilenet_jax import models
from mobilenet_jax import restore
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.errors import DataError
from mobilenet_jax.errors import UserError
from mobilenet_jax.rundir import identity as run_identity

FORMATS = ("saved_model", "tflite")
INPUTS = ("float", "uint8")
SIGNATURE = "serving_default"


def _tf():
  # Lazy: TensorFlow takes seconds to import and only export needs it.
  from mobilenet_jax.data._tf import tf  # pylint: disable=g-import-not-at-top
  return tf


def load_for_export(workdir: str, step: int | None = None, ema: bool = False):
  """(model, variables, config) of a run, the model built with the XLA depthwise and
  1x1 and 3x3 convolutions (the ops a mobile runtime accelerates)."""
  _, variables, config = restore.load(workdir, step=step, ema=ema)
  config.model.depthwise_impl = "xla"
  config.model.pointwise_impl = "xla"
  config.model.spatial_conv_impl = "xla"
  return models.create(config.model), variables, config


def serving_function(model, variables, input_kind: str = "float") -> Callable:
  """images -> probabilities; uint8 inputs are normalized as the data pipeline does."""
  if input_kind not in INPUTS:
    raise ConfigError(f"--input={input_kind!r}: choose one of {', '.join(INPUTS)}.")

  def probabilities(images):
    if input_kind == "uint8":
      images = images.astype(np.float32) / 127.5 - 1.0
    return jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)

  return probabilities


def _tf_function(fn: Callable, image_size: int, input_kind: str, batch: int | None):
  """`fn` as a tf.function through jax2tf (native serialization)."""
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  tf = _tf()
  dtype = tf.uint8 if input_kind == "uint8" else tf.float32
  converted = jax2tf.convert(fn, with_gradient=False,
                             polymorphic_shapes=None if batch else ["(b, ...)"])
  spec = tf.TensorSpec([batch, image_size, image_size, 3], dtype, name="images")
  return tf.function(lambda images: {"probabilities": converted(images)},
                     input_signature=[spec], autograph=False)


def save_saved_model(fn: Callable, image_size: int, out: str, input_kind: str = "float"
                     ) -> None:
  """Writes `fn` as a SavedModel with a `serving_default` signature (any batch)."""
  tf = _tf()
  module = tf.Module()
  module.serve = _tf_function(fn, image_size, input_kind, batch=None)
  tf.saved_model.save(module, out,
                      signatures={SIGNATURE: module.serve.get_concrete_function()})


def to_tflite(fn: Callable, image_size: int, input_kind: str = "float",
              calibration: np.ndarray | None = None) -> bytes:
  """The TFLite flatbuffer of `fn` at batch 1: float32, or full-integer int8 when
  `calibration` images (float32 in [-1, 1], [N, S, S, 3]) are given."""
  tf = _tf()
  module = tf.Module()
  module.serve = _tf_function(fn, image_size, input_kind, batch=1)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  if calibration is not None:
    if input_kind == "uint8":
      calibration = np.round((calibration + 1.0) * 127.5).astype(np.uint8)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if input_kind == "float":
      converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  # The converter's C++ side logs a few lines per model to stderr ("Ignored
  # output_format.", "fully_quantize: 0, ..."); they are shown only if it fails.
  return console.stderr_only_on_failure(converter.convert)


def eval_images(config, split: str | None = None, limit: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(images, labels) batches of `split` (default: the eval split), no padding."""
  seen = 0
  for batch in data.eval_batches(config.data, 64, split):
    keep = batch["mask"] > 0
    images, labels = batch["image"][keep], batch["label"][keep]
    if limit is not None:
      images, labels = images[:limit - seen], labels[:limit - seen]
    seen += len(labels)
    if len(labels):
      yield images, labels
    if limit is not None and seen >= limit:
      return


def calibration_images(config, count: int) -> np.ndarray:
  """`count` images of the run's train split through the eval preprocessing."""
  try:
    images = [x for x, _ in eval_images(config, config.data.train_split, count)]
  except DataError as error:
    raise DataError(f"int8 calibration reads the run's train split: {error}") from None
  return np.concatenate(images)


class TFLiteModel:
  """A TFLite model in the LiteRT interpreter: float images in [-1, 1] -> probabilities,
  one image at a time, (de)quantizing int8 and uint8 inputs and outputs as needed."""

  def __init__(self, model: bytes | str, threads: int | None = None):
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    content = model if isinstance(model, bytes) else open(model, "rb").read()
    self._content = content
    self._interpreter = interpreter.Interpreter(model_content=content,
                                                num_threads=threads)
    self._interpreter.allocate_tensors()
    self._input = self._interpreter.get_input_details()[0]
    self._output = self._interpreter.get_output_details()[0]

  def op_names(self) -> list[str]:
    """The graph's operators, before any delegate (XNNPACK) takes them over."""
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    bare = interpreter.Interpreter(
        model_content=self._content,
        experimental_op_resolver_type=(
            interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    bare.allocate_tensors()
    return [op["op_name"] for op in bare._get_ops_details()]  # pylint: disable=protected-access

  @property
  def size_bytes(self) -> int:
    """The flatbuffer's size."""
    return len(self._content)

  def _quantized_input(self, image: np.ndarray) -> np.ndarray:
    dtype = self._input["dtype"]
    if dtype == np.uint8:  # --input=uint8: raw pixels, quantized model or not.
      return np.round((image + 1.0) * 127.5).astype(np.uint8)
    if dtype == np.int8:
      scale, zero_point = self._input["quantization"]
      return np.clip(np.round(image / scale + zero_point), -128, 127).astype(np.int8)
    return image.astype(np.float32)

  def invoke(self, image: np.ndarray) -> np.ndarray:
    """Probabilities of one image ([S, S, 3] or [1, S, S, 3])."""
    self._interpreter.set_tensor(self._input["index"],
                                 self._quantized_input(image.reshape(self._input["shape"])))
    self._interpreter.invoke()
    out = self._interpreter.get_tensor(self._output["index"])[0]
    if self._output["dtype"] != np.float32:
      scale, zero_point = self._output["quantization"]
      out = (out.astype(np.float32) - zero_point) * scale
    return out

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return np.stack([self.invoke(image) for image in images])


def _check_out(fmt: str, out: str) -> None:
  """ConfigError before any work if `out` cannot take what `fmt` writes."""
  if not out:
    raise ConfigError("--out is empty: name the file (or, for saved_model, the "
                      "directory) to write.")
  if fmt == "tflite" and os.path.isdir(out):
    raise ConfigError(f"--out={out} is a directory; a TFLite model is one file: "
                      f"name it, e.g. --out={os.path.join(out, 'model.tflite')}.")
  if fmt == "saved_model" and os.path.isfile(out):
    raise ConfigError(f"--out={out} is a file; a SavedModel is a directory: name a "
                      "new one.")


def export(workdir: str, fmt: str, out: str, step: int | None = None, ema: bool = False,
           quantize: str | None = None, input_kind: str = "float",
           num_calibration: int = 300) -> str:
  """Exports the run in `workdir` to `out`; returns `out`."""
  if fmt not in FORMATS:
    raise ConfigError(f"--format={fmt!r}: choose one of {', '.join(FORMATS)}.")
  if quantize not in (None, "", "none", "int8"):
    raise ConfigError(f"--quantize={quantize!r}: choose int8 (or leave it unset).")
  quantize = quantize if quantize == "int8" else None
  if quantize and fmt != "tflite":
    raise ConfigError("--quantize=int8 needs --format=tflite.")
  _check_out(fmt, out)
  model, variables, config = load_for_export(workdir, step, ema)
  fn = serving_function(model, variables, input_kind)
  size = config.data.image_size
  if fmt == "saved_model":
    save_saved_model(fn, size, out, input_kind)
    return out
  calibration = calibration_images(config, num_calibration) if quantize else None
  flatbuffer = to_tflite(fn, size, input_kind, calibration)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "wb") as f:
    f.write(flatbuffer)
  return out


# ---- The deployment table ---------------------------------------------------------


def median_latency_ms(run: Callable[[], object], runs: int, warmup: int = 10) -> float:
  """Median wall time of `run()` in milliseconds over `runs` calls after a warmup."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def _evaluation_set(config, limit: int, seed: int = 0):
  """(images, labels or None, description): the eval split, or random images if the
  run's dataset is not available here."""
  try:
    batches = list(eval_images(config, None, limit))
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    split = data.resolve_split(config.data, config.data.eval_split)  # The one read.
    return images, labels, f"{config.data.name} {split}, {len(labels)} images"
  except (DataError, UserError) as error:
    size = config.data.image_size
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (min(limit, 100), size, size, 3)).astype(np.float32)
    reason = str(error).split(". ")[0]
    return images, None, (f"{len(images)} uniform random images (the run's dataset is "
                          f"not available here: {reason})")


def deployment_report(workdir: str, step: int | None = None, ema: bool = False,
                      threads: int | None = None, runs: int = 200,
                      max_examples: int = 1000, num_calibration: int = 300,
                      random_calibration: bool = False) -> tuple[list[dict], str]:
  """(rows, note): for the JAX model, TFLite float32 and TFLite int8 of the run: file
  size, batch-1 latency (median of `runs`), top-1 on the eval split and top-1
  agreement with the JAX model."""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  threads = threads or os.cpu_count()
  _, variables, config = restore.load(workdir, step=step, ema=ema)
  jax_model = models.create(config.model)  # As training runs it ("auto" kernels).
  export_model, _, _ = load_for_export(workdir, step, ema)
  images, labels, described = _evaluation_set(config, max_examples)
  jax_fn = jax.jit(serving_function(jax_model, variables))
  reference = np.concatenate([np.asarray(jax_fn(images[i:i + 50]))
                              for i in range(0, len(images), 50)])
  one = images[:1]
  rows = [{"model": "JAX (Flax, float32)",
           "bytes": len(flax.serialization.to_bytes(variables)),
           "latency_ms": median_latency_ms(
               lambda: jax_fn(one).block_until_ready(), runs),
           "probs": reference}]
  fn = serving_function(export_model, variables)
  if random_calibration:
    rng = np.random.default_rng(1)
    size = config.data.image_size
    calibration = rng.uniform(-1, 1, (num_calibration, size, size, 3)).astype(np.float32)
  else:
    calibration = calibration_images(config, num_calibration)
  for name, calib in (("TFLite float32", None), ("TFLite int8", calibration)):
    tflite = TFLiteModel(to_tflite(fn, config.data.image_size, "float", calib), threads)
    rows.append({"model": name, "bytes": tflite.size_bytes,
                 "latency_ms": median_latency_ms(lambda t=tflite: t.invoke(one), runs),
                 "probs": tflite(images)})
  for row in rows:
    predicted = row.pop("probs").argmax(-1)
    row["top1"] = float(np.mean(predicted == labels)) if labels is not None else None
    row["agreement"] = float(np.mean(predicted == reference.argmax(-1)))
  note = (f"{run_identity.architecture_name(config)}; batch 1, median of {runs} runs; "
          f"TFLite (LiteRT, XNNPACK) threads={threads}; JAX on XLA:CPU's own thread "
          f"pool ({os.cpu_count()} cores); top-1 and agreement on {described}; int8 "
          "calibrated on "
          f"{'random images' if random_calibration else 'the train split'} "
          f"({num_calibration}).")
  return rows, note


def format_report(rows: list[dict], note: str) -> str:
  """The deployment table as Markdown."""
  lines = ["| model | file size | batch-1 latency | top-1 | top-1 agreement with JAX |",
           "|---|---:|---:|---:|---:|"]
  for row in rows:
    top1 = "n/a" if row["top1"] is None else f"{100 * row['top1']:.1f}%"
    lines.append(f"| {row['model']} | {row['bytes'] / 2**20:.2f} MiB | "
                 f"{row['latency_ms']:.2f} ms | {top1} | {100 * row['agreement']:.1f}% |")
  return "\n".join(lines + ["", note])


def define_flags() -> None:
  """The flags of `mobilenet-export`."""
  cli.define_workdir()
  cli.define_checkpoint_choice("Export")
  flags.DEFINE_enum("format", None, list(FORMATS), "What to write.")
  flags.DEFINE_enum("quantize", None, ["int8"],
                    "int8: full-integer post-training quantization (tflite only).")
  flags.DEFINE_enum("input", "float", list(INPUTS),
                    "float: images in [-1, 1]; uint8: raw pixels.")
  flags.DEFINE_string("out", None, "Output path (a directory for saved_model).")
  flags.DEFINE_integer("calibration_images", 300, "Images calibrating int8.")
  flags.DEFINE_bool("random_calibration", False, "Calibrate the report's int8 model on "
                    "random images (when the run's dataset is not available here).")
  flags.DEFINE_bool("report", False, "Print the deployment table instead.")
  flags.DEFINE_integer("threads", None, "TFLite threads for --report (default: all).")
  flags.DEFINE_integer("runs", 200, "Timed runs per model for --report.")
  flags.DEFINE_integer("max_examples", 1000, "Eval images for --report's top-1.")


def main(argv):
  """The command-line program."""
  console.configure()  # Quiet TensorFlow, Orbax and TFDS, as in the other tools.
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  if f.report:
    rows, note = deployment_report(f.workdir, f.step, f.ema, f.threads, f.runs,
                                   f.max_examples, f.calibration_images,
                                   f.random_calibration)
    print(format_report(rows, note))
    return
  if not f.out or not f.format:
    raise ConfigError("Give --format=saved_model|tflite and --out=PATH (or --report).")
  out = export(f.workdir, f.format, f.out, f.step, f.ema, f.quantize, f.input,
               f.calibration_images)
  print(f"Wrote {out}")


def console_main():
  """The `mobilenet-export` console script (and `python -m mobilenet_jax.export`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
