"""Emulating the paper's asynchronous training inside synchronous data parallelism.

The V1 paper trained with asynchronous gradient descent on many workers: each worker's
gradient was computed at parameters some updates old and applied to the current ones.
Here the global batch is split into `num_workers` virtual workers; worker w computes its
gradient at the parameters of `delays[w]` steps ago (0 <= delay <= staleness tau), read
from a ring buffer of the last tau parameter versions kept in the train state
(`TrainState.stale_params`), and the averaged gradient updates the current parameters.
With tau = 0 no buffer exists and the step is plain synchronous training.

`lr.staleness_scaling="inverse"` divides the learning rate of a gradient computed d
steps late by max(1, d), the staleness-aware asynchronous SGD of Zhang et al. 2016
("Staleness-aware Async-SGD for Distributed Deep Learning", arXiv:1511.05950). It is
applied as a weight on each worker's gradient before the average: exactly a per-gradient
learning rate for SGD; for RMSprop with the TPU recipe's epsilon of 1.0 (inside the
square root) nearly so, as its normaliser stays close to 1 for small gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax.errors import ConfigError

DELAY_MODES = ("spread", "sampled")
STALENESS_SCALINGS = ("none", "inverse")


def staleness_scaling(config) -> str:
  """`config.lr.staleness_scaling`; "none" for configs without it (older runs)."""
  return (config.get("lr") or {}).get("staleness_scaling", "none")


def check_config(config) -> None:
  """Raises ConfigError if the global batch does not split into the accumulation
  micro-batches and virtual workers (ranges are validation.py's: checked before)."""
  micro = config.global_batch_size // config.grad_accum_steps
  if config.global_batch_size % config.grad_accum_steps:
    raise ConfigError(
        f"global_batch_size={config.global_batch_size} is not divisible by "
        f"grad_accum_steps={config.grad_accum_steps}.")
  if config.staleness and micro % config.num_workers:
    raise ConfigError(
        f"each micro-batch of {micro} examples must split evenly into "
        f"num_workers={config.num_workers} virtual workers.")


def worker_delays(mode: str, num_workers: int, staleness: int,
                  rng: jax.Array) -> jax.Array:
  """int32 [num_workers] delays in 0..staleness.

  "spread": fixed delays evenly spread from 0 to tau (a single worker gets tau);
  "sampled": drawn uniformly per step from `rng`.
  """
  if mode == "sampled":
    return jax.random.randint(rng, (num_workers,), 0, staleness + 1, jnp.int32)
  if num_workers == 1:
    return jnp.full((1,), staleness, jnp.int32)
  return jnp.asarray(np.round(np.linspace(0, staleness, num_workers)), jnp.int32)


def params_at_delays(params, stale_params, step: jax.Array, delays: jax.Array):
  """Stacks, for each worker, the parameters of `delays[w]` steps ago.

  Version `step - d` (d >= 1) sits at ring index `(step - d) % tau`; before the first
  update the buffer holds the initial parameters, so early delays read those.
  """
  def gather(current, buffer):
    tau = buffer.shape[0]
    versions = jnp.concatenate([current[None], buffer])
    index = jnp.where(delays == 0, 0, 1 + (step - delays) % tau)
    return versions[index]

  return jax.tree.map(gather, params, stale_params)


def push_params(stale_params, params, step: jax.Array):
  """Stores the parameters of version `step` (before its update) in the ring buffer."""
  return jax.tree.map(lambda buffer, p: buffer.at[step % buffer.shape[0]].set(p),
                      stale_params, params)


def delay_weights(scaling: str, delays: jax.Array) -> jax.Array | None:
  """Per-worker gradient weights for `scaling`: 1 / max(1, delay) for "inverse",
  None (a plain mean) for "none"."""
  if scaling == "inverse":
    return 1.0 / jnp.maximum(1, delays).astype(jnp.float32)
  return None


def average_gradients(grads, weights: jax.Array | None):
  """The mean over the leading worker axis, each worker's gradient times its weight."""
  if weights is None:
    return jax.tree.map(lambda g: g.mean(0), grads)
  return jax.tree.map(
      lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1) / g.shape[0], grads)
