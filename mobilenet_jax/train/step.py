"""The pure train and eval step functions that `trainer` jits over the device mesh.

One train step: split the global batch into `grad_accum_steps` micro-batches (a scan,
so activation memory is that of one micro-batch); for each, compute the gradient at the
current parameters or, with staleness, per virtual worker at delayed parameters; average;
add weight decay and apply the optimizer; update the stale-parameter ring buffer and the
EMA. Micro-batches and workers take strided slices of the batch, so every device keeps
working on the examples it holds.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mobilenet_jax.train import async_emulation
from mobilenet_jax.train.state import TrainState

Batch = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
                  ) -> jax.Array:
  """Per-example softmax cross-entropy with optional label smoothing."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _strided_split(x: jax.Array, parts: int) -> jax.Array:
  """[B, ...] -> [parts, B / parts, ...] where part i holds examples i, i+parts, ..."""
  return jnp.swapaxes(x.reshape((x.shape[0] // parts, parts) + x.shape[1:]), 0, 1)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """TF's ExponentialMovingAverage with num_updates: min(decay, (1+t)/(10+t))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _value_and_grad_fn(model: nn.Module, label_smoothing: float) -> Callable:
  """(params, batch_stats, images, labels, rng) -> (grads, new batch_stats, loss,
  top-1) of one batch."""

  def loss_fn(params, batch_stats, images, labels, rng):
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    loss = cross_entropy(logits, labels, label_smoothing).mean()
    correct = (jnp.argmax(logits, -1) == labels).mean()
    return loss, (updates.get("batch_stats", batch_stats), correct)

  def value_and_grad(params, batch_stats, images, labels, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, images, labels, rng)
    return grads, aux[0], loss, aux[1]

  return value_and_grad


def _micro_step_fn(value_and_grad: Callable, state: TrainState, dropout_rng, config,
                   delay_rng) -> Callable:
  """The scan body over micro-batches: adds one micro-batch's gradient to the carry
  (grads sum, batch_stats, loss sum, top-1 sum). With staleness, each virtual worker's
  gradient is taken at its delayed parameters and the workers' are averaged."""
  staleness, workers = config.staleness, config.num_workers
  if staleness:
    delays = async_emulation.worker_delays(config.worker_delays, workers, staleness,
                                           delay_rng)
    worker_params = async_emulation.params_at_delays(
        state.params, state.stale_params, state.step, delays)
    worker_weights = async_emulation.delay_weights(
        async_emulation.staleness_scaling(config), delays)

  def micro_step(carry, micro):
    grads_sum, batch_stats, loss_sum, correct_sum = carry
    images, labels, index = micro
    micro_rng = jax.random.fold_in(dropout_rng, index)
    if staleness:
      grads, new_stats, loss, correct = jax.vmap(
          value_and_grad, in_axes=(0, None, 0, 0, 0))(
              worker_params, batch_stats, _strided_split(images, workers),
              _strided_split(labels, workers), jax.random.split(micro_rng, workers))
      # Each worker normalizes its own batch; the running statistics take the mean.
      grads = async_emulation.average_gradients(grads, worker_weights)
      new_stats = jax.tree.map(lambda s: s.mean(0), new_stats)
      loss, correct = loss.mean(), correct.mean()
    else:
      grads, new_stats, loss, correct = value_and_grad(
          state.params, batch_stats, images, labels, micro_rng)
    grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
    return (grads_sum, new_stats, loss_sum + loss, correct_sum + correct), None

  return micro_step


def _updated_state(state: TrainState, grads, batch_stats, optimizer, config
                   ) -> TrainState:
  """The optimizer's update, the stale-parameter buffer and the EMA, one step on."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  stale = (async_emulation.push_params(state.stale_params, state.params, state.step)
           if config.staleness else state.stale_params)
  if config.ema_decay:
    decay = ema_decay_at(state.step, config.ema_decay)
    # TF's ExponentialMovingAverage form, shadow -= (1 - decay) * (shadow - value):
    # a weight that did not move (a frozen backbone) keeps its average exactly.
    ema = lambda old, new: old - (1.0 - decay) * (old - new)
    ema_params = jax.tree.map(ema, state.ema_params, params)
    ema_batch_stats = jax.tree.map(ema, state.ema_batch_stats, batch_stats)
  else:
    ema_params, ema_batch_stats = params, batch_stats
  return state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
      ema_params=ema_params, ema_batch_stats=ema_batch_stats, stale_params=stale)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, config,
                    learning_rate: optax.Schedule,
                    adjust_batch_stats: Callable | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Builds `train_step(state, batch) -> (state, metrics)` for `config`'s recipe.

  `adjust_batch_stats(old, new)` may keep some BatchNorm statistics fixed (a frozen
  backbone); by default all are updated.
  """
  accum = config.grad_accum_steps
  value_and_grad = _value_and_grad_fn(model, config.label_smoothing)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    delay_rng, dropout_rng = jax.random.split(rng)
    micro_step = _micro_step_fn(value_and_grad, state, dropout_rng, config, delay_rng)
    images, labels = batch["image"], batch["label"]
    carry = (jax.tree.map(jnp.zeros_like, state.params), state.batch_stats, 0.0, 0.0)
    if accum == 1:
      carry, _ = micro_step(carry, (images, labels, 0))
    else:
      carry, _ = jax.lax.scan(micro_step, carry, (
          _strided_split(images, accum), _strided_split(labels, accum),
          jnp.arange(accum)))
    grads_sum, batch_stats, loss_sum, correct_sum = carry
    grads = jax.tree.map(lambda g: g / accum, grads_sum)
    if adjust_batch_stats is not None:
      batch_stats = adjust_batch_stats(state.batch_stats, batch_stats)
    new_state = _updated_state(state, grads, batch_stats, optimizer, config)
    metrics = {"loss": loss_sum / accum, "top1": correct_sum / accum,
               "learning_rate": learning_rate(state.step),
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module) -> Callable[[dict, Batch], dict]:
  """Builds `eval_step(variables, batch) -> sums` over the masked examples."""

  def eval_step(variables: dict, batch: Batch) -> dict:
    logits = model.apply(variables, batch["image"], train=False)
    labels, mask = batch["label"], batch["mask"]
    loss = cross_entropy(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "loss": jnp.sum(loss * mask),
        "top1": jnp.sum((top5[:, 0] == labels) * mask),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "count": jnp.sum(mask),
    }

  return eval_step
