"""The train state: one pytree holding everything a training step reads and writes.

Plain arrays only, so the step is a pure function under `jax.jit` and a checkpoint is
the tree as it is. `stale_params` holds the parameters of the last `staleness` steps
for the asynchronous-training emulation (a ring buffer: the leaves gain a leading axis
of size tau, and version `step - d` sits at index `(step - d) % tau`); it is empty when
staleness is 0.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Parameters, BatchNorm statistics, optimizer state, EMA, stale buffer, step, RNG."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  ema_params: PyTree
  ema_batch_stats: PyTree
  stale_params: PyTree
  rng: jax.Array  # Raw uint32 key data, so that checkpoints hold a plain array.

  @property
  def variables(self) -> dict:
    """The model's variables for `model.apply`."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  @property
  def ema_variables(self) -> dict:
    """The EMA of the model's variables."""
    return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}


def create_train_state(variables: dict, optimizer: optax.GradientTransformation,
                       staleness: int, rng: jax.Array) -> TrainState:
  """The state at step 0 for `variables` ({"params", "batch_stats"?})."""
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  stale = jax.tree.map(lambda p: jnp.stack([p] * staleness), params) if staleness else {}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=optimizer.init(params),
      # Copies: the step donates the state, and one buffer cannot be donated twice.
      ema_params=jax.tree.map(jnp.copy, params),
      ema_batch_stats=jax.tree.map(jnp.copy, batch_stats),
      stale_params=stale,
      rng=jax.random.key_data(rng),
  )
