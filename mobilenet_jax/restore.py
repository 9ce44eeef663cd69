"""Restoring a trained model from its run directory, for notebooks and tools.

    import mobilenet_jax
    model, variables, config = mobilenet_jax.load("runs/v1", ema=True)
    logits = model.apply(variables, images, train=False)

Everything comes from the checkpoint: the config it stores builds the model, and only
the weights are read (the optimizer state is not needed).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections

from mobilenet_jax import models
from mobilenet_jax.rundir import readers


def load(workdir: str, step: int | None = None, ema: bool = False,
         sharding: jax.sharding.Sharding | None = None
         ) -> tuple[nn.Module, dict, ml_collections.ConfigDict]:
  """(model, {"params", "batch_stats"}, config) of the run in `workdir`.

  `step`: a checkpointed step (default: the latest). `ema`: the moving average of
  the weights instead of the weights. Arrays are replicated over every device unless
  `sharding` says otherwise. Raises CheckpointError if there is no usable checkpoint.
  """
  if sharding is None:  # Whole on every device.
    mesh = jax.sharding.Mesh(jax.devices(), ("devices",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  weights, step, config = readers.restore_weights(workdir, sharding, step)
  if ema:
    readers.check_kept_ema(config, workdir, "load it without ema")
  prefix = "ema_" if ema else ""
  variables = {"params": weights[prefix + "params"],
               "batch_stats": weights[prefix + "batch_stats"]}
  return models.create(config.model), variables, config
