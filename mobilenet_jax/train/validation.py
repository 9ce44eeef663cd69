"""Phase 1 of two: the static check of a whole training config.

`validate(config)` reads nothing but the config: it runs in well under a second,
before any dataset is read, model built or program compiled, and raises one
`ConfigError` listing every problem it finds, each naming the key, the value and what
is allowed. Without it a bad value surfaces wherever it is first used: a TensorFlow
resize error for a negative image size, a ValueError from the input pipeline after a
minute of training for an unknown `data.on_corrupt_image`. The allowed values come
from the modules that use them.

Phase 2, what needs the devices, the dataset or the run directory, is
`run_plan.check_environment`.
"""

from __future__ import annotations

import math

from mobilenet_jax import data
from mobilenet_jax import models
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models import depthwise, layers, mobilenet_v1, validation
from mobilenet_jax.train import async_emulation, optimizers


class _Problems:
  """Collects one message per bad key."""

  def __init__(self, config):
    self.config = config
    self.messages: list[str] = []

  def get(self, key: str, default=None):
    node = self.config
    for part in key.split("."):
      if node is None or part not in node:
        return default
      node = node[part]
    return node

  def check(self, ok: bool, key: str, allowed: str) -> None:
    if not ok:
      self.messages.append(f"{key}={self.get(key)!r} (allowed: {allowed})")

  def choice(self, key: str, allowed, default=None) -> None:
    allowed = tuple(allowed)
    self.check(self.get(key, default) in allowed, key,
               "one of " + ", ".join(repr(a) for a in allowed))

  def number(self, key: str, low: float, high: float = math.inf, *,
             low_open: bool = False, high_open: bool = False, integer: bool = False,
             default=None) -> None:
    value = self.get(key, default)
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))
    if ok:
      ok = (value > low if low_open else value >= low) and (
          value < high if high_open else value <= high)
    lo = f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high:g}"
    self.check(ok, key, f"{'an integer' if integer else 'a number'} {lo}{hi}")

  def flag(self, key: str, default=False) -> None:
    self.check(isinstance(self.get(key, default), bool), key, "True or False")

  def text(self, key: str) -> None:
    value = self.get(key)
    self.check(isinstance(value, str) and bool(value.strip()), key, "a non-empty string")

  def range_pair(self, key: str, low: float, high: float) -> None:
    value = self.get(key)
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          and low < value[0] <= value[1] <= high)
    self.check(ok, key, f"(min, max) with {low:g} < min <= max <= {high:g}")


def _data(p: _Problems) -> None:
  p.text("data.name")
  p.text("data.train_split")
  p.text("data.eval_split")
  p.number("data.image_size", validation.MIN_RESOLUTION, integer=True)
  p.range_pair("data.crop_area_range", 0.0, 1.0)
  p.range_pair("data.crop_aspect_range", 0.0, math.inf)
  p.number("data.eval_crop_fraction", 0.0, 1.0, low_open=True)
  p.number("data.shuffle_buffer", 1, integer=True)
  p.flag("data.random_flip")
  # Only configs/small_images.py sets these; absent means Inception crops.
  p.choice("data.train_crop", data.TRAIN_CROPS, "inception")
  if p.get("data.train_crop") == "pad":
    p.number("data.pad_fraction", 0.0, 0.5)
  p.flag("data.cache")
  p.flag("data.fused_decode_crop", True)
  p.choice("data.on_corrupt_image", data.ON_CORRUPT_MODES)
  p.choice("data.classes_without_train_images", data.MISSING_CLASS_MODES, "warn")


def _model(p: _Problems) -> None:
  p.choice("model.name", models.MODELS)
  p.number("model.width", 0.0, low_open=True)
  p.number("model.num_classes", 1, integer=True)
  p.choice("model.dtype", models.DTYPES, "float32")
  p.number("model.dropout_rate", 0.0, 1.0, high_open=True)
  if p.get("model.bn_momentum") is not None:  # None: chosen from the run length.
    p.number("model.bn_momentum", 0.0, 1.0, high_open=True)
  p.number("model.bn_epsilon", 0.0, low_open=True)
  p.choice("model.depthwise_impl", ("auto", *depthwise.IMPLEMENTATIONS), "auto")
  p.choice("model.pointwise_impl", ("auto", *layers.POINTWISE_IMPLS), "auto")
  p.choice("model.spatial_conv_impl", ("auto", *layers.SPATIAL_CONV_IMPLS), "auto")
  if p.get("model.name") == "mobilenet_v1":
    p.choice("model.depth", mobilenet_v1.DEPTHS)
    p.choice("model.block", mobilenet_v1.BLOCKS)
    p.choice("model.activation", layers.ACTIVATIONS)


def _recipe(p: _Problems) -> None:
  p.check(isinstance(p.get("seed"), int) and not isinstance(p.get("seed"), bool), "seed",
          "an integer")
  p.number("global_batch_size", 1, integer=True)
  p.number("eval_batch_size", 1, integer=True)
  steps = p.get("num_train_steps")
  p.check(isinstance(steps, int), "num_train_steps", "an integer (<= 0: use num_epochs)")
  if not (isinstance(steps, int) and steps > 0):
    p.number("num_epochs", 0.0, low_open=True)
  p.choice("optimizer.name", optimizers.OPTIMIZERS)
  for key in ("optimizer.decay", "optimizer.momentum", "optimizer.b1", "optimizer.b2"):
    p.number(key, 0.0, 1.0, high_open=True)
  p.number("optimizer.epsilon", 0.0)
  p.number("optimizer.grad_clip_norm", 0.0)
  p.flag("optimizer.nesterov")
  # lr.base may be inf: a run that must diverge is a legitimate test of the NaN guard.
  p.number("lr.base", 0.0)
  p.number("lr.reference_batch", 0.0, low_open=True)
  p.number("lr.warmup_epochs", 0.0)
  p.choice("lr.schedule", optimizers.SCHEDULES)
  p.number("lr.decay_rate", 0.0, low_open=True)
  p.number("lr.decay_epochs", 0.0, low_open=True)
  p.number("lr.min_ratio", 0.0, 1.0)
  p.number("weight_decay", 0.0)
  p.number("depthwise_weight_decay_mult", 0.0)
  p.number("label_smoothing", 0.0, 1.0, high_open=True)
  p.number("ema_decay", 0.0, 1.0, high_open=True)
  p.number("bn_group_size", 0, integer=True, default=0)


def _async(p: _Problems) -> None:
  p.number("staleness", 0, integer=True)
  p.number("num_workers", 1, integer=True)
  p.choice("worker_delays", async_emulation.DELAY_MODES)
  p.choice("lr.staleness_scaling", async_emulation.STALENESS_SCALINGS, "none")
  p.number("grad_accum_steps", 1, integer=True)
  if not p.messages:  # Its divisibility checks need sane numbers.
    try:
      async_emulation.check_config(p.config)
    except ConfigError as error:
      p.messages.append(str(error).rstrip("."))


def _loop_and_checkpoints(p: _Problems) -> None:
  p.number("log_every_steps", 1, integer=True)
  p.number("eval_every_steps", 0, integer=True)
  p.number("checkpoint_every_steps", 0, integer=True)
  p.number("keep_checkpoints", 1, integer=True)
  p.flag("keep_best_checkpoint")


def _init_from(p: _Problems) -> None:
  p.number("init_from.step", -1, integer=True, default=-1)
  p.flag("init_from.ema")
  p.flag("init_from.backbone_only")
  p.flag("init_from.freeze_backbone")
  p.flag("init_from.freeze_bn", default=True)


def validate(config) -> None:
  """Raises one ConfigError naming every bad key of a training config, with what
  is allowed; returns None if the config is sound."""
  problems = _Problems(config)
  for check in (_data, _model, _recipe, _async, _loop_and_checkpoints, _init_from):
    check(problems)
  if problems.messages:
    plural = "s" if len(problems.messages) > 1 else ""
    raise ConfigError(f"bad config value{plural}: {'; '.join(problems.messages)}.")
