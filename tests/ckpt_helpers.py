"""Small states and configs shared by the checkpoint tests (and their subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from configs import mobilenet_v1
from mobilenet_jax import models
from mobilenet_jax.train import optimizers
from mobilenet_jax.train import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Arrays whole on every device: how tools restore weights.
EVERYWHERE = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices(), ("d",)),
                                        jax.sharding.PartitionSpec())


def override(cfg, **overrides):
  """Sets dotted keys ("lr.base"=...) of a ConfigDict; returns it."""
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return cfg


def config(**overrides):
  """The runlocal MobileNet V1 config (width 0.25, 32x32, 10 classes)."""
  return override(mobilenet_v1.get_config("runlocal"), **overrides)


def fake_params(size: int = 64, num_classes: int = 10, value=None):
  """A MobileNet-shaped params tree, tiny (or `size` floats per kernel)."""
  keys = jax.random.split(jax.random.key(0), 3)
  def make(key, shape):
    if value is not None:
      return jnp.full(shape, value, jnp.float32)
    return jax.random.normal(key, shape, jnp.float32)
  return {"conv0": {"conv": {"kernel": make(keys[0], (size,))},
                    "bn": {"scale": make(keys[1], (4,)), "bias": jnp.zeros(4)}},
          "classifier": {"kernel": make(keys[2], (4, num_classes)),
                         "bias": jnp.zeros(num_classes)}}


def state_from(cfg, variables, rng_seed: int = 1):
  """create_train_state with the config's optimizer and staleness."""
  optimizer, _ = optimizers.create_optimizer(cfg, 10, 100, variables["params"])
  return state_lib.create_train_state(variables, optimizer, cfg.staleness,
                                      jax.random.key(rng_seed))


def fake_state(cfg, step: int = 0, size: int = 64, value=None):
  """A TrainState over `fake_params`, with non-trivial optimizer state."""
  params = fake_params(size, cfg.model.num_classes, value)
  batch_stats = {"conv0": {"bn": {"mean": jnp.ones(4), "var": jnp.ones(4) * 2}}}
  optimizer, _ = optimizers.create_optimizer(cfg, 10, 100, params)
  state = state_lib.create_train_state({"params": params, "batch_stats": batch_stats},
                                       optimizer, cfg.staleness, jax.random.key(1))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = optimizer.update(grads, state.opt_state, params)
  return state.replace(step=jnp.asarray(step, jnp.int32), opt_state=opt_state,
                       ema_params=jax.tree.map(lambda p, u: p + u, params, updates))


def model_state(cfg, seed: int = 0):
  """The real model's TrainState for `cfg` (init takes a few seconds)."""
  model = models.create(cfg.model)
  variables = models.init_variables(model, jax.random.key(seed))
  return state_from(cfg, variables)


def assert_trees_equal(a, b):
  """Same structure, and every leaf bit-identical."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def run_python(code: str, devices: int = 1, timeout: float = 120, **kwargs):
  """Runs `code` in a fresh Python with `devices` simulated CPU devices."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, **kwargs)
