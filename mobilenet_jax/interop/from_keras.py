r"""keras.applications MobileNet / MobileNetV2 weights -> a mobilenet_jax run directory.

  python -m mobilenet_jax.interop.from_keras --arch=v1 --width=1.0 --res=224 \
      --weights=mobilenet_1_0_224_tf.h5 --workdir=runs/keras_v1_100_224

  from mobilenet_jax.interop import from_keras
  config = from_keras.import_keras_model(keras_model, "v2", 1.0, "runs/keras_v2")

The run directory holds one checkpoint (step 0) of the weights plus the config that
builds the equal Flax model, written by the project's checkpoint module, so
`evaluate`, `predict`, `mobilenet_jax.load`, `init_from` and `export` read it like any
trained run. What the conversion relies on:

- Keras' layers map one to one onto the Flax modules (`_v1_layers`, `_v2_layers`).
  Depthwise kernels (3, 3, C, 1) become Flax's (3, 3, 1, C). V1's classifier
  `conv_preds` is a 1x1 convolution with bias on the pooled 1x1 map: the same as the
  Flax Dense classifier with its kernel reshaped from (1, 1, C, K) to (C, K).
- BatchNorm has the same formula and momentum convention in both (running = m *
  running + (1 - m) * batch); epsilon and momentum are read off the Keras layers.
- Keras pads ((0, 1), (0, 1)) and convolves 'valid' before each stride-2 depthwise conv
  (V1 always; V2 only when its input size is unknown). That equals TF "SAME", which
  the Flax model uses, only when that layer's input is even: other resolutions are
  refused (for V1: every multiple of 32 works, e.g. 128, 160, 192, 224).
- Classes: Keras' ImageNet weights have 1000 classes (no background); TF-slim's have
  1001 with a background class first. `num_classes=1001` adds that background class
  to a 1000-class model; `config.imported_from.classes` says which the run has.

Keras (and TensorFlow with it) is imported only by this module, on first use.
Installed with pip, the same program is `mobilenet-from-keras`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mobilenet_jax import cli, config_files, console, models
from mobilenet_jax.errors import UserError

ARCHS = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}
KERAS_FUNCTIONS = {"v1": "MobileNet", "v2": "MobileNetV2"}
# A background class added to a 1000-class model gets zero weights and this bias:
# exp(-50) ~ 2e-22 leaves the other probabilities unchanged in float32 for any
# classifier whose largest logit is above -50, and stays finite for fine-tuning.
BACKGROUND_BIAS = -50.0
_CLASSES_NOTE = {
    "keras": "ImageNet classes 0-999 as Keras orders them, no background class",
    "slim": "index 0 is TF-slim's background class, 1-1000 the ImageNet classes",
}


class KerasImportError(UserError):
  """The Keras model or weights file does not convert into the asked-for MobileNet."""


def _keras():
  import keras  # pylint: disable=g-import-not-at-top
  return keras


# (Flax module path, Keras layer name, kind) for every layer that holds weights.
def _v1_layers() -> Iterator[tuple[tuple[str, ...], str, str]]:
  yield ("conv0", "conv"), "conv1", "conv"
  yield ("conv0", "bn"), "conv1_bn", "bn"
  for i in range(1, 14):
    yield (f"block{i}", "dw", "depthwise"), f"conv_dw_{i}", "depthwise"
    yield (f"block{i}", "dw", "bn"), f"conv_dw_{i}_bn", "bn"
    yield (f"block{i}", "pw", "conv"), f"conv_pw_{i}", "conv"
    yield (f"block{i}", "pw", "bn"), f"conv_pw_{i}_bn", "bn"
  yield ("classifier",), "conv_preds", "conv_classifier"


def _v2_layers() -> Iterator[tuple[tuple[str, ...], str, str]]:
  yield ("conv0", "conv"), "Conv1", "conv"
  yield ("conv0", "bn"), "bn_Conv1", "bn"
  for k in range(17):  # Keras block_id 0..16 are the Flax block1..block17.
    prefix, block = ("expanded_conv_" if k == 0 else f"block_{k}_"), f"block{k + 1}"
    if k:  # Keras' first block, like the paper's, has no expansion conv.
      yield (block, "expand", "conv"), prefix + "expand", "conv"
      yield (block, "expand", "bn"), prefix + "expand_BN", "bn"
    yield (block, "dw", "depthwise"), prefix + "depthwise", "depthwise"
    yield (block, "dw", "bn"), prefix + "depthwise_BN", "bn"
    yield (block, "project", "conv"), prefix + "project", "conv"
    yield (block, "project", "bn"), prefix + "project_BN", "bn"
  yield ("conv_last", "conv"), "Conv_1", "conv"
  yield ("conv_last", "bn"), "Conv_1_bn", "bn"
  yield ("classifier",), "predictions", "dense"


LAYOUTS = {"v1": _v1_layers, "v2": _v2_layers}


def _array(variable) -> np.ndarray:
  return np.asarray(variable.numpy(), np.float32)


def _layer_weights(layer, kind: str) -> dict[str, dict[str, np.ndarray]]:
  """{collection: {name: array}} of one Keras layer, in the Flax layout."""
  if kind == "bn":
    if layer.gamma is None or layer.beta is None:
      raise KerasImportError(f"Keras layer {layer.name!r} is a BatchNorm without "
                             "scale or center; the Flax BatchNorm has both.")
    return {"params": {"scale": _array(layer.gamma), "bias": _array(layer.beta)},
            "batch_stats": {"mean": _array(layer.moving_mean),
                            "var": _array(layer.moving_variance)}}
  kernel = _array(layer.kernel)
  has_bias = getattr(layer, "use_bias", False)
  if kind in ("conv", "depthwise") and has_bias:
    raise KerasImportError(f"Keras layer {layer.name!r} has a bias; the MobileNet "
                           "convolutions before BatchNorm have none.")
  if kind == "depthwise":
    if kernel.shape[-1] != 1:
      raise KerasImportError(
          f"Keras layer {layer.name!r} has depth_multiplier {kernel.shape[-1]}; only "
          "1 (the papers' MobileNets) is supported.")
    kernel = kernel.transpose(0, 1, 3, 2)  # (3, 3, C, 1) -> (3, 3, 1, C).
  if kind == "conv_classifier":
    kernel = kernel.reshape(kernel.shape[-2:])  # (1, 1, C, K) -> (C, K).
  if kind in ("conv_classifier", "dense"):
    if not has_bias:
      raise KerasImportError(f"Keras classifier {layer.name!r} has no bias.")
    return {"params": {"kernel": kernel, "bias": _array(layer.bias)}}
  return {"params": {"kernel": kernel}}


def _set(tree: dict, path: tuple[str, ...], leaves: dict) -> None:
  node = tree
  for key in path:
    node = node.setdefault(key, {})
  node.update(leaves)


def keras_variables(keras_model, arch: str) -> tuple[dict, dict[str, str]]:
  """({"params", "batch_stats"} in the Flax layout, {Flax path: Keras layer name}).

  Raises KerasImportError naming the layer that is missing or not what MobileNet
  `arch` has, or a weighted Keras layer that has no place in it (another family).
  """
  variables: dict = {"params": {}, "batch_stats": {}}
  sources: dict[str, str] = {}
  wanted = set()
  for path, name, kind in LAYOUTS[arch]():
    wanted.add(name)
    try:
      layer = keras_model.get_layer(name)
    except ValueError:
      raise KerasImportError(
          f"The Keras model {keras_model.name!r} has no layer {name!r}: it is not a "
          f"keras.applications.{KERAS_FUNCTIONS[arch]} (check --arch).") from None
    for collection, leaves in _layer_weights(layer, kind).items():
      _set(variables[collection], path, leaves)
      for leaf in leaves:
        sources[f"{collection}/{'/'.join(path)}/{leaf}"] = name
  extra = [layer.name for layer in keras_model.layers
           if layer.weights and layer.name not in wanted]
  if extra:
    raise KerasImportError(
        f"Keras layer {extra[0]!r} of {keras_model.name!r} has weights that "
        f"MobileNet {arch} has no place for: it is not a "
        f"keras.applications.{KERAS_FUNCTIONS[arch]}.")
  return variables, sources


def _flat(tree: dict) -> dict[str, Any]:
  return {"/".join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_shapes(variables: dict, sources: dict[str, str], model, res: int,
                 width: float) -> None:
  """KerasImportError naming the first Keras layer whose weights the model cannot take."""
  expected = _flat(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)))
  got = _flat(variables)
  missing = [name for name in expected if name not in got]
  if missing:
    raise KerasImportError(f"No Keras weight for {missing[0]}.")
  for name in sources:  # In the network's order, so the first wrong layer is named.
    shape_struct = expected[name]
    if got[name].shape != shape_struct.shape:
      raise KerasImportError(
          f"Keras layer {sources[name]!r} has {name.rsplit('/', 1)[-1]} of shape "
          f"{got[name].shape}, but {type(model).__name__}(width={width}) needs "
          f"{shape_struct.shape} there: the Keras model has another width (alpha), "
          f"class count or depth multiplier, or this width is not supported.")


def check_layers(keras_model, res: int) -> dict:
  """Checks what weights cannot show; returns {"epsilon", "momentum"} of BatchNorm.

  ReLU6 everywhere, one BatchNorm epsilon and momentum, and zero padding that equals
  SAME at resolution `res` (see the module docstring).
  """
  keras = _keras()
  norms = [l for l in keras_model.layers if isinstance(l, keras.layers.BatchNormalization)]
  settings = {(float(l.epsilon), float(l.momentum)) for l in norms}
  if len(settings) != 1:
    raise KerasImportError(f"The BatchNorm layers of {keras_model.name!r} differ in "
                           f"epsilon/momentum {sorted(settings)}; the Flax model has one.")
  for layer in keras_model.layers:
    if isinstance(layer, keras.layers.ReLU) and layer.max_value != 6:
      raise KerasImportError(f"Keras layer {layer.name!r} is ReLU with max_value "
                             f"{layer.max_value}; MobileNets use ReLU6.")
  size = math.ceil(res / 2)  # After the stride-2 'same' stem conv.
  for layer in keras_model.layers:
    if not isinstance(layer, keras.layers.ZeroPadding2D):
      continue
    same = ((0, 1), (0, 1)) if size % 2 == 0 else ((1, 1), (1, 1))
    padding = tuple(tuple(int(p) for p in pair) for pair in layer.padding)
    if padding != same:
      raise KerasImportError(
          f"Keras layer {layer.name!r} pads {padding} before a stride-2 depthwise "
          f"conv, which differs from TF 'SAME' ({same}) on its {size}x{size} input at "
          f"resolution {res}: use a resolution where every stride-2 layer sees an even "
          "size (any multiple of 32, e.g. 128, 160, 192 or 224).")
    size = math.ceil(size / 2)
  (epsilon, momentum), = settings
  return {"epsilon": epsilon, "momentum": momentum}


def _resolution(keras_model, res: int | None) -> int:
  shape = tuple(keras_model.input_shape)
  if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
    raise KerasImportError(f"The Keras model takes {keras_model.input_shape[1:]} "
                           "inputs; only square RGB (channels-last) ones convert.")
  if shape[1] is None:
    return res or 224
  if res and res != shape[1]:
    raise KerasImportError(f"The Keras model takes {shape[1]}x{shape[2]} inputs, not "
                           f"--res={res}.")
  return int(shape[1])


def _with_background(params: dict) -> dict:
  """The classifier with TF-slim's background class prepended (see BACKGROUND_BIAS)."""
  head = params["classifier"]
  kernel = np.concatenate([np.zeros_like(head["kernel"][:, :1]), head["kernel"]], 1)
  bias = np.concatenate([np.full((1,), BACKGROUND_BIAS, np.float32), head["bias"]])
  return {**params, "classifier": {"kernel": kernel, "bias": bias}}


def build_config(arch: str, width: float, res: int, num_classes: int, bn: dict,
                 dropout_rate: float, provenance: dict) -> ml_collections.ConfigDict:
  """The paper config of `arch` with the Keras model's settings (what the run stores)."""
  config = config_files.get_config(
      f"{ARCHS[arch]}.py:width={width},res={res},num_classes={num_classes}")
  config.model.bn_epsilon = bn["epsilon"]  # Keras: 1e-3, as TF-slim.
  config.model.bn_momentum = bn["momentum"]  # Keras: V1 0.99, V2 0.999.
  config.model.dropout_rate = dropout_rate  # Keras: V1 0.001, V2 no dropout.
  config.ema_decay = 0.0  # An imported model has no moving average of its weights.
  config.imported_from = ml_collections.ConfigDict(provenance)
  return config


def convert(keras_model, arch: str, width: float, res: int | None = None,
            num_classes: int | None = None, weights_file: str | None = None
            ) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, {"params", "batch_stats"}) of the Flax MobileNet equal to `keras_model`.

  `arch`: "v1" or "v2"; `width`: its alpha; `res`: the input size (default: the
  Keras model's, or 224 if that is not fixed); `num_classes`: the Keras model's
  (default) or one more, which adds TF-slim's background class first.
  """
  if arch not in ARCHS:
    raise KerasImportError(f"--arch={arch!r}: choose v1 or v2.")
  res = _resolution(keras_model, res)
  variables, sources = keras_variables(keras_model, arch)
  bn = check_layers(keras_model, res)
  keras_classes = variables["params"]["classifier"]["bias"].shape[0]
  num_classes = num_classes or keras_classes
  if num_classes not in (keras_classes, keras_classes + 1):
    raise KerasImportError(
        f"num_classes={num_classes}: the Keras classifier has {keras_classes}; choose "
        f"{keras_classes}, or {keras_classes + 1} to add a background class first.")
  dropout = keras_model.get_layer("dropout").rate if arch == "v1" else 0.0
  # 1001 outputs follow TF-slim (background first), whether added here or in Keras.
  labels = {1000: "keras", 1001: "slim"}.get(num_classes)
  provenance = {
      "framework": f"keras {_keras().__version__}",
      "model": f"keras.applications.{KERAS_FUNCTIONS[arch]} ({keras_model.name})",
      "weights": os.path.abspath(weights_file) if weights_file else "(in memory)",
      "classes": f"{num_classes}: {_CLASSES_NOTE.get(labels, 'as the Keras model')}",
  }
  config = build_config(arch, float(width), res, keras_classes, bn, float(dropout),
                        provenance)
  check_shapes(variables, sources, models.create(config.model), res, width)
  if num_classes != keras_classes:
    variables["params"] = _with_background(variables["params"])
    config.model.num_classes = num_classes
  return config, variables


def write_run(config: ml_collections.ConfigDict, variables: dict, workdir: str) -> None:
  """Writes `variables` and `config` as the step-0 checkpoint of a new run in `workdir`
  (the weights are also their own moving average)."""
  from mobilenet_jax.rundir import checkpointer  # pylint: disable=g-import-not-at-top
  checkpointer.write_weights_only(workdir, config, variables["params"],
                                  variables["batch_stats"])


def import_keras_model(keras_model, arch: str, width: float, workdir: str,
                       res: int | None = None, num_classes: int | None = None,
                       weights_file: str | None = None) -> ml_collections.ConfigDict:
  """Converts an in-memory keras.applications MobileNet (V1 or V2) into a run
  directory in `workdir`; returns the stored config. Arguments as for `convert`."""
  config, variables = convert(keras_model, arch, width, res, num_classes, weights_file)
  write_run(config, variables, workdir)
  return config


def build_keras_model(arch: str, width: float, res: int, weights_file: str | None = None,
                      classes: int = 1000):
  """keras.applications' MobileNet `arch`, with the weights of `weights_file`
  (.h5 or .keras, as Keras saves and downloads them), else Keras' random init."""
  keras = _keras()
  if arch not in ARCHS:
    raise KerasImportError(f"--arch={arch!r}: choose v1 or v2.")
  build = getattr(keras.applications, KERAS_FUNCTIONS[arch])
  try:
    model = build(input_shape=(res, res, 3), alpha=width, weights=None, classes=classes)
  except ValueError as error:
    raise KerasImportError(f"keras.applications.{KERAS_FUNCTIONS[arch]}(alpha={width}, "
                           f"res={res}) cannot be built: {error}") from None
  if weights_file:
    if not os.path.exists(weights_file):
      raise KerasImportError(f"Weights file not found: {weights_file}")
    try:
      model.load_weights(weights_file)
    except Exception as error:  # pylint: disable=broad-except
      reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
      raise KerasImportError(
          f"{weights_file} does not hold the weights of keras.applications."
          f"{KERAS_FUNCTIONS[arch]}(alpha={width}, {res}x{res}, classes={classes}) "
          f"({type(error).__name__}: {reason}); check --arch, --width, --res and "
          "--keras_classes.") from None
  return model


def define_flags() -> None:
  """The flags of `mobilenet-from-keras`."""
  flags.DEFINE_enum("arch", None, list(ARCHS), "MobileNet V1 or V2.", required=True)
  flags.DEFINE_float("width", 1.0, "Width multiplier alpha of the Keras model.")
  flags.DEFINE_integer("res", None, "Input resolution (default 224).")
  flags.DEFINE_string("weights", None, "Keras weights file (.h5 or .keras); none: "
                      "Keras' random initialization.")
  flags.DEFINE_integer("keras_classes", 1000, "Classes of the Keras model / weights.")
  flags.DEFINE_integer("num_classes", None, "Classes of the run: the Keras model's "
                       "(default), or one more to add TF-slim's background class.")
  cli.define_workdir("The new run directory.")


def main(argv):
  """The command-line program."""
  console.configure()  # Quiet TensorFlow, Orbax and TFDS, as in the other tools.
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  model = build_keras_model(f.arch, f.width, f.res or 224, f.weights, f.keras_classes)
  if not f.weights:
    print("note: no --weights: Keras' random initialization (for timing and tests).")
  config = import_keras_model(model, f.arch, f.width, f.workdir, f.res, f.num_classes,
                              f.weights)
  print(f"Wrote {config.model.name} width={config.model.width} "
        f"res={config.data.image_size} classes={config.model.num_classes} to "
        f"{f.workdir} ({config.imported_from.classes}).")


def console_main():
  """The `mobilenet-from-keras` console script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
