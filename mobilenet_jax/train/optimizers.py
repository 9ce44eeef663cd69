"""Optimizers, learning-rate schedules and weight decay, all from optax.

The paper's optimizer is RMSprop with TensorFlow 1 semantics (tf.compat.v1.train.
RMSPropOptimizer): the epsilon sits inside the square root, the squared-gradient accumulator starts at
ones, and the learning rate is applied before the momentum accumulation,
`mom = momentum * mom + lr * g / sqrt(ms + eps)`. optax's `rmsprop` with
`initial_scale=1.0, eps_in_sqrt=True` and `momentum` is exactly that.
"""

from __future__ import annotations

import jax
import optax

from mobilenet_jax.errors import ConfigError

OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """base x global_batch / reference_batch, with optional warmup and decay."""
  lr = config.lr
  if lr.schedule not in SCHEDULES:
    raise ConfigError(f"lr.schedule={lr.schedule!r} is unknown; allowed: "
                      f"{', '.join(SCHEDULES)}.")
  peak = lr.base * config.global_batch_size / lr.reference_batch
  warmup_steps = int(round(lr.warmup_epochs * steps_per_epoch))
  if lr.schedule == "exponential":
    # Staircase decay every decay_epochs, floored at min_ratio x the initial rate.
    decay = optax.exponential_decay(
        peak, transition_steps=max(1, int(round(lr.decay_epochs * steps_per_epoch))),
        decay_rate=lr.decay_rate, staircase=True, end_value=peak * lr.min_ratio)
  elif lr.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup_steps),
                                        alpha=lr.min_ratio)
  else:
    decay = optax.constant_schedule(peak)
  if not warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def is_depthwise_kernel(path) -> bool:
  """True for the kernel of a DepthwiseConv (named "depthwise" in every block)."""
  names = _path_names(path)
  return names[-1] == "kernel" and "depthwise" in names


def is_regular_kernel(path) -> bool:
  """Conv and classifier kernels other than depthwise ones: no biases, no BatchNorm."""
  return _path_names(path)[-1] == "kernel" and not is_depthwise_kernel(path)


def weight_decay_masks(params) -> tuple:
  """(regular kernels, depthwise kernels) masks over `params`."""
  regular = jax.tree_util.tree_map_with_path(lambda p, _: is_regular_kernel(p), params)
  depthwise = jax.tree_util.tree_map_with_path(lambda p, _: is_depthwise_kernel(p), params)
  return regular, depthwise


def create_optimizer(config, steps_per_epoch: int, total_steps: int,
                     params) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The gradient transformation for `config` and its learning-rate schedule.

  L2 weight decay enters as `wd * w` added to the gradient before the optimizer (the
  gradient of TF's `wd * sum(w^2) / 2`), on regular kernels, and with
  `depthwise_weight_decay_mult` times that on depthwise kernels.
  """
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={opt.name!r} is unknown; allowed: "
                      f"{', '.join(OPTIMIZERS)}.")
  schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
  regular_mask, depthwise_mask = weight_decay_masks(params)
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name != "adamw" and config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay, mask=regular_mask))
    if config.depthwise_weight_decay_mult:
      parts.append(optax.add_decayed_weights(
          config.weight_decay * config.depthwise_weight_decay_mult, mask=depthwise_mask))
  if opt.name == "rmsprop_tf":
    parts.append(optax.rmsprop(schedule, decay=opt.decay, eps=opt.epsilon,
                               initial_scale=1.0, eps_in_sqrt=True,
                               momentum=opt.momentum or None))
  elif opt.name == "sgd":
    parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  else:
    # AdamW's decoupled decay follows the same masks.
    mask = jax.tree.map(
        lambda r, d: r or (d and bool(config.depthwise_weight_decay_mult)),
        regular_mask, depthwise_mask)
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2,
                             weight_decay=config.weight_decay, mask=mask))
  return optax.chain(*parts), schedule
