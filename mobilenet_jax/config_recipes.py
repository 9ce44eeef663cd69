"""Pieces shared by every config file: the argument-string parser and defaults.

Config files take one string argument, as in big_vision:
`--config=configs/mobilenet_v1.py:width=0.5,res=160`. `parse_arg` turns it into a
ConfigDict whose values are typed after the defaults the file declares. The files in
configs/ import this module (and nothing from `configs`), so that they load the same
from a clone and from an installed copy (mobilenet_jax/config_files.py).
"""

from __future__ import annotations

import ml_collections

from mobilenet_jax.errors import ConfigError

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses "k1=v1,k2=v2" into a ConfigDict typed after `defaults`.

  A bare key ("runlocal") means True. Unknown keys and values of the wrong type raise
  a ConfigError naming the argument (and listing the known ones), so a typo never
  silently falls back to a default.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for key, raw in _items(arg):
    if key not in defaults:
      raise ConfigError(
          f"Unknown config argument {key!r}; known arguments: {', '.join(sorted(defaults))}.")
    parsed[key] = _typed(key, raw, defaults[key])
  return parsed


def given_args(arg: str | None) -> set[str]:
  """The argument names `arg` sets explicitly ("width=0.5,runlocal" -> both)."""
  return {key for key, _ in _items(arg)}


def _items(arg: str | None) -> list[tuple[str, str | None]]:
  items = []
  for item in (arg or "").split(","):
    if item.strip():
      key, sep, raw = item.strip().partition("=")
      items.append((key.strip(), raw if sep else None))
  return items


def _typed(key: str, raw: str | None, default):
  """`raw` as the type of `default`; None (a bare key) means True."""
  kind = type(default)
  if raw is None:
    if kind is not bool:
      raise ConfigError(f"Config argument {key!r} needs a value ({key}=...).")
    return True
  if kind is bool:
    if raw.lower() not in ("true", "false", "1", "0"):
      raise ConfigError(f"Config argument {key}={raw!r} must be true or false.")
    return raw.lower() in ("true", "1")
  if kind in (int, float):
    try:
      return kind(raw)
    except ValueError:
      raise ConfigError(f"Config argument {key}={raw!r} must be {_TYPE_NAMES[kind]} "
                        f"(default {default!r}).") from None
  return raw


def reject_args(given: set[str], names, reason: str) -> None:
  """ConfigError if any of `names` was given: for arguments a config cannot honour."""
  rejected = sorted(set(names) & given)
  if rejected:
    raise ConfigError(f"Config argument(s) {', '.join(rejected)} cannot be used here: "
                      f"{reason}.")


def data_config(name: str, image_size: int) -> ml_collections.ConfigDict:
  """The input pipeline section (mobilenet_jax/data)."""
  data = ml_collections.ConfigDict()
  data.name = name  # Any TFDS name, "image_folder", or the built-in "shapes10".
  data.data_dir = ml_collections.FieldReference(None, field_type=str)
  data.train_split = "train"
  data.eval_split = "validation"
  data.image_size = image_size
  # Inception-style crops. The V1 paper uses "a smaller range of crop sizes than
  # Inception" (V1 paper, section 3.3) without giving the limit. Inception uses
  # a minimum area of 0.08; we take 0.25, a quarter of the image, so that a crop
  # still shows most of one object at small resolutions.
  data.crop_area_range = (0.25, 1.0)
  data.crop_aspect_range = (3.0 / 4.0, 4.0 / 3.0)
  data.eval_crop_fraction = 0.875  # Reference facts, section 6.
  data.random_flip = True
  data.shuffle_buffer = 16_384
  data.cache = False
  # Training decodes only the crop window of each JPEG (the same crops; the input
  # pipeline's largest saving on photos). False decodes every image whole first.
  data.fused_decode_crop = True
  data.on_corrupt_image = "error"  # or "skip" (with a warning naming the file)
  # A class without training images (only in val/ of an image folder): "warn" or
  # "error". Our choice: warn, so that a folder still being filled trains.
  data.classes_without_train_images = "warn"
  return data


def train_config() -> ml_collections.ConfigDict:
  """The training recipe shared by the paper configs (mobilenet_jax/train).

  Defaults follow the TPU reference training of MobileNet V1 (tensorflow/tpu
  models/official/mobilenet) unless a comment says
  otherwise. Config files override what differs per model.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.global_batch_size = 1024  # TPU reference.
  config.num_epochs = 300.0
  # When > 0, overrides num_epochs.
  config.num_train_steps = -1
  config.optimizer = _optimizer_config()
  config.lr = _lr_config()

  # L2 weight decay added to the gradient (TF's wd*sum(w^2)/2 has gradient wd*w) on
  # regular conv and classifier kernels; TF-slim: 4e-5.
  config.weight_decay = 4e-5
  # The paper: "very little or no weight decay on the depthwise filters".
  config.depthwise_weight_decay_mult = 0.0
  config.label_smoothing = 0.1  # TPU reference; the V1 paper itself used none.
  config.ema_decay = 0.995  # TPU reference; 0 disables EMA.

  # Asynchronous-training emulation (mobilenet_jax/train/async_emulation.py).
  config.staleness = 0  # tau: gradients are computed at parameters tau steps old.
  config.num_workers = 1  # virtual workers the global batch is split into.
  config.worker_delays = "spread"  # "spread" (0..tau over workers) or "sampled".
  config.grad_accum_steps = 1  # micro-batches per update.
  # BatchNorm statistics over the global batch (0) or over groups of this many
  # examples (the reference TPU training normalized per core).
  config.bn_group_size = 0

  config.log_every_steps = 100
  config.eval_every_steps = 5000  # Also evaluates at the end; 0 = only at the end.
  config.checkpoint_every_steps = 5000
  config.keep_checkpoints = 3
  config.keep_best_checkpoint = True
  config.eval_batch_size = 1024
  config.init_from = _init_from_config()
  return config


def _optimizer_config() -> ml_collections.ConfigDict:
  """`config.optimizer` of train_config."""
  optimizer = ml_collections.ConfigDict()
  # "rmsprop_tf" (TF1 semantics: eps inside the sqrt, accumulator starts at ones),
  # "sgd" (with momentum) or "adamw".
  optimizer.name = "rmsprop_tf"
  optimizer.decay = 0.9  # RMSprop decay, TPU reference and V2 paper.
  optimizer.momentum = 0.9  # TPU reference and V2 paper.
  optimizer.epsilon = 1.0  # TPU reference.
  optimizer.nesterov = False  # sgd only
  optimizer.b1 = 0.9  # adamw only
  optimizer.b2 = 0.999  # adamw only
  optimizer.grad_clip_norm = 0.0  # 0 disables clipping.
  return optimizer


def _lr_config() -> ml_collections.ConfigDict:
  """`config.lr` of train_config: the learning-rate schedule."""
  lr = ml_collections.ConfigDict()
  # Learning rate = base x global_batch / reference_batch (linear scaling).
  lr.base = 0.165  # TPU reference: 0.165 x batch / 256.
  lr.reference_batch = 256
  lr.warmup_epochs = 0.0  # TPU reference: no warmup.
  lr.schedule = "exponential"  # "exponential" (staircase), "cosine", "constant"
  lr.decay_rate = 0.94  # TPU reference: 0.94 every 3 epochs.
  lr.decay_epochs = 3.0
  lr.min_ratio = 1e-4  # Floor as a fraction of the initial rate (TPU reference).
  # "inverse": a gradient d steps stale gets lr / max(1, d) (staleness-aware async SGD,
  # Zhang et al. 2016, arXiv:1511.05950); "none": every gradient gets lr. Only acts with
  # staleness > 0 (mobilenet_jax/train/async_emulation.py).
  lr.staleness_scaling = "none"
  return lr


def _init_from_config() -> ml_collections.ConfigDict:
  """`config.init_from` of train_config: start from another run's checkpoint
  (mobilenet_jax/rundir/)."""
  init_from = ml_collections.ConfigDict()
  init_from.workdir = ml_collections.FieldReference(None, field_type=str)
  init_from.step = -1  # -1 = latest.
  # The source's moving average of its weights (what `evaluate --ema` reads), not the
  # weights themselves; e.g. when its EMA evaluated better.
  init_from.ema = False
  init_from.backbone_only = False  # New classifier for a new class count.
  init_from.freeze_backbone = False
  # With freeze_backbone: BatchNorm normalizes with its running statistics during
  # training as well (Keras' transfer-learning recipe, base_model(x, training=False)),
  # so training and evaluation see the same network. False: batch statistics in
  # training, running statistics kept unchanged.
  init_from.freeze_bn = True
  return init_from


def shrink_for_local_run(config: ml_collections.ConfigDict, args=None,
                         given: set[str] = frozenset()) -> None:
  """Turns any paper config into a smoke run that finishes in a minute on a CPU.

  Keeps the architecture family and recipe; swaps in the built-in dataset at a small
  resolution and a small width so every code path runs without downloads. Arguments
  given explicitly with runlocal (`given`, values in `args`) still apply: width, res
  and batch are honoured, dataset and num_classes (fixed by shapes10) are rejected.
  """
  reject_args(given, ("dataset", "num_classes"),
              "runlocal trains the built-in shapes10 (10 classes)")
  config.data.name = "shapes10"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_size = args.res if "res" in given else 32
  config.data.shuffle_buffer = 1024
  config.model.width = args.width if "width" in given else min(config.model.width, 0.25)
  config.model.num_classes = 10
  config.global_batch_size = args.batch if "batch" in given else 32
  config.eval_batch_size = 64
  config.num_train_steps = 20
  config.log_every_steps = 5
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 10
