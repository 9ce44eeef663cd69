"""Real, donating train steps after init_from, in every mode (full, backbone_only,
freeze_backbone with and without inference-mode BatchNorm, with and without EMA)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mobilenet_jax.models import layers
from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.train import batchnorm, optimizers, transfer
from mobilenet_jax.train import state as state_lib
from mobilenet_jax.train.step import make_train_step
from tests import ckpt_helpers as h


class TinyNet(nn.Module):
  """Named like a MobileNet (conv0 ... classifier) but compiles in a second."""
  num_classes: int = 10
  frozen_bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    ops = layers.Ops(batch_norm=layers.norm_factory(0.9, 1e-3, 0, self.frozen_bn))
    x = layers.ConvBN(8, 3, 2, ops=ops, name="conv0")(x, train)
    x = layers.ConvBN(8, 1, 1, ops=ops, name="block1")(x, train)
    return nn.Dense(self.num_classes, name="classifier")(x.mean((1, 2)))


def _state(cfg, model, seed):
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)), train=False)
  optimizer, schedule = optimizers.create_optimizer(cfg, 10, 100, variables["params"])
  if cfg.init_from.freeze_backbone:
    optimizer = transfer.freeze(optimizer,
                                transfer.trainable_mask(cfg, variables["params"]))
  state = state_lib.create_train_state(variables, optimizer, cfg.staleness,
                                       jax.random.key(seed))
  return state, optimizer, schedule


@pytest.fixture(scope="module", name="source_dir")
def _source_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("source"))
  cfg = h.config()
  state, _, _ = _state(cfg, TinyNet(), seed=0)
  # Statistics unlike a fresh init (variance 2), which still pass signal through.
  state = state.replace(batch_stats=jax.tree.map(lambda b: b * 2.0, state.batch_stats))
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    ckpt.save(state, force=True)
  return workdir


MODES = {
    "full": {},
    "full_no_ema": {"ema_decay": 0.0},
    "full_from_ema": {"init_from.ema": True},
    "full_stale": {"staleness": 2, "num_workers": 2},
    "backbone_only": {"init_from.backbone_only": True, "model.num_classes": 4},
    "frozen": {"init_from.backbone_only": True, "model.num_classes": 4,
               "init_from.freeze_backbone": True},
    "frozen_no_ema": {"init_from.backbone_only": True, "model.num_classes": 4,
                      "init_from.freeze_backbone": True, "ema_decay": 0.0},
    "frozen_train_mode_bn": {"init_from.backbone_only": True, "model.num_classes": 4,
                             "init_from.freeze_backbone": True,
                             "init_from.freeze_bn": False},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_train_steps_after_init_from(source_dir, mode):
  cfg = h.config(**{"init_from.workdir": source_dir, "global_batch_size": 8,
                    "model.dropout_rate": 0.0, **MODES[mode]})
  model = TinyNet(cfg.model.num_classes, frozen_bn=batchnorm.bn_frozen(cfg))
  fresh, optimizer, schedule = _state(cfg, model, seed=1)
  state = transfer.init_from(cfg, fresh)
  loaded = jax.device_get(state)
  adjust = ((lambda old, new: transfer.keep_frozen_batch_stats(cfg, old, new))
            if cfg.init_from.freeze_backbone else None)
  # Donating, as the trainer does: shared buffers in the state would fail here.
  train_step = jax.jit(make_train_step(model, optimizer, cfg, schedule, adjust),
                       donate_argnums=0)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {"image": jnp.asarray(rng.normal(size=(8, 8, 8, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, cfg.model.num_classes, 8))}
    state, metrics = train_step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 3
  trained = jax.device_get(state)
  moved = lambda a, b: not np.allclose(a, b)
  assert moved(trained.params["classifier"]["kernel"],
               loaded.params["classifier"]["kernel"])
  backbone_moved = moved(trained.params["conv0"]["conv"]["kernel"],
                         loaded.params["conv0"]["conv"]["kernel"])
  stats_moved = moved(trained.batch_stats["conv0"]["bn"]["var"],
                      loaded.batch_stats["conv0"]["bn"]["var"])
  frozen = bool(cfg.init_from.freeze_backbone)
  assert backbone_moved != frozen
  # A frozen backbone keeps its BatchNorm statistics, in either BN mode.
  assert stats_moved != frozen
  if cfg.ema_decay:
    assert moved(trained.ema_params["classifier"]["kernel"],
                 loaded.ema_params["classifier"]["kernel"])


def test_frozen_bn_normalizes_with_running_statistics():
  """In train mode, frozen BatchNorm gives the eval-mode output (Keras'
  training=False): the forward pass does not depend on the rest of the batch."""
  model = TinyNet(frozen_bn=True)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)) * 3 + 1
  variables = model.init(jax.random.key(1), x[:1], train=False)
  variables = {**variables, "batch_stats": jax.tree.map(
      lambda b: b + 0.3, variables["batch_stats"])}
  train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(train_out, model.apply(variables, x, train=False),
                             rtol=1e-5, atol=1e-6)
  h.assert_trees_equal(updates["batch_stats"], variables["batch_stats"])
  live = TinyNet(frozen_bn=False).apply(variables, x, train=True,
                                        mutable=["batch_stats"])[0]
  assert not np.allclose(live, train_out, atol=1e-3)
