"""init_from (all weights or the backbone) and freezing the backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mobilenet_jax.errors import CheckpointError
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.rundir import checkpointer as checkpointing
from mobilenet_jax.train import optimizers
from mobilenet_jax.train import run_plan
from mobilenet_jax.train import state as state_lib
from mobilenet_jax.train import transfer
from tests import ckpt_helpers as h


@pytest.fixture(scope="module", name="source")
def _source(tmp_path_factory):
  """A run directory with 10 classes and weights unlike a fresh state's.

  transfer only looks at parameter names and shapes, so a MobileNet-shaped tree
  stands in for the model (whose init would cost seconds per test).
  """
  workdir = str(tmp_path_factory.mktemp("source"))
  cfg = h.config()
  state = h.fake_state(cfg, step=10)
  state = state.replace(params=jax.tree.map(lambda p: p + 1.0, state.params),
                        batch_stats=jax.tree.map(lambda b: b + 2.0, state.batch_stats))
  with checkpointing.Checkpointer(workdir, cfg) as ckpt:
    ckpt.save(state)
  return workdir, state


def _target_config(source_dir, **overrides):
  return h.config(**{"init_from.workdir": source_dir, **overrides})


def _fresh(cfg, size=64):
  """A step-0 state for `cfg` whose weights differ from the source's."""
  return h.fake_state(cfg, step=0, size=size, value=-5.0)


def test_init_from_all_weights(source):
  source_dir, source_state = source
  cfg = _target_config(source_dir, staleness=2)
  fresh = _fresh(cfg)
  state = transfer.init_from(cfg, fresh)
  h.assert_trees_equal(state.params, source_state.params)
  h.assert_trees_equal(state.batch_stats, source_state.batch_stats)
  h.assert_trees_equal(state.ema_params, source_state.params)
  h.assert_trees_equal(state.ema_batch_stats, source_state.batch_stats)
  for slot in range(2):
    h.assert_trees_equal(jax.tree.map(lambda s: s[slot], state.stale_params),
                         source_state.params)
  assert int(state.step) == 0
  h.assert_trees_equal(state.opt_state, fresh.opt_state)
  h.assert_trees_equal(state.rng, fresh.rng)
  assert transfer.init_from(h.config(), fresh) is fresh  # No init_from.workdir.


def test_init_from_the_moving_average(source, tmp_path):
  """init_from.ema reads ema_params / ema_batch_stats; a run without them is refused."""
  source_dir, source_state = source
  cfg = _target_config(source_dir, **{"init_from.ema": True})
  state = transfer.init_from(cfg, _fresh(cfg))
  h.assert_trees_equal(state.params, source_state.ema_params)
  h.assert_trees_equal(state.batch_stats, source_state.ema_batch_stats)
  h.assert_trees_equal(state.ema_params, source_state.ema_params)
  assert not np.allclose(source_state.ema_params["classifier"]["kernel"],
                         source_state.params["classifier"]["kernel"])

  no_ema = h.config(ema_decay=0.0)
  with checkpointing.Checkpointer(str(tmp_path), no_ema) as ckpt:
    ckpt.save(h.fake_state(no_ema, step=1), force=True)
  cfg = _target_config(str(tmp_path), **{"init_from.ema": True})
  with pytest.raises(ConfigError, match=r"kept no moving average.*drop init_from\.ema"):
    transfer.init_from(cfg, _fresh(cfg))
  # The trainer refuses it before anything loads, in its path checks.
  with pytest.raises(ConfigError, match=r"run in \S+ kept no moving average \(ema_decay"
                     r"=0\): drop --config.init_from.ema"):
    run_plan._check_init_from(cfg)  # pylint: disable=protected-access
  with_ema = _target_config(source_dir, **{"init_from.ema": True})
  run_plan._check_init_from(with_ema)  # pylint: disable=protected-access


def test_init_from_backbone_with_new_classes(source):
  source_dir, source_state = source
  cfg = _target_config(source_dir, **{"model.num_classes": 4,
                                      "init_from.backbone_only": True})
  fresh = _fresh(cfg)
  state = transfer.init_from(cfg, fresh)
  h.assert_trees_equal(state.params["classifier"], fresh.params["classifier"])
  backbone = {k: v for k, v in state.params.items() if k != "classifier"}
  h.assert_trees_equal(backbone, {k: v for k, v in source_state.params.items()
                                  if k != "classifier"})
  h.assert_trees_equal(state.batch_stats, source_state.batch_stats)

  # Without backbone_only the classifier's shape is an error that says what to do.
  cfg.init_from.backbone_only = False
  with pytest.raises(CheckpointError, match=r"params/classifier/\w+ has shape "
                     r".*10,?\).*4,?\).*backbone_only"):
    transfer.init_from(cfg, fresh)


def test_init_from_other_width_names_the_parameter(source):
  source_dir, _ = source
  cfg = _target_config(source_dir, **{"model.width": 0.5,
                                      "init_from.backbone_only": True})
  with pytest.raises(CheckpointError, match=r"params/conv0/conv/kernel has shape "
                     r"\(64,\) in the checkpoint of .* but \(128,\) in this model"):
    transfer.init_from(cfg, _fresh(cfg, size=128))


def test_frozen_backbone_only_trains_the_classifier():
  cfg = h.config(**{"init_from.freeze_backbone": True, "weight_decay": 1e-2})
  params = h.fake_params()
  mask = transfer.trainable_mask(cfg, params)
  assert mask["classifier"] == {"kernel": True, "bias": True}
  assert not any(jax.tree.leaves(mask["conv0"]))
  assert all(jax.tree.leaves(transfer.trainable_mask(h.config(), params)))

  optimizer, _ = optimizers.create_optimizer(cfg, 10, 100, params)
  optimizer = transfer.freeze(optimizer, mask)
  state = state_lib.create_train_state({"params": params}, optimizer, 0,
                                       jax.random.key(0))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(optimizer.update)(grads, state.opt_state, params)
  new = jax.tree.map(lambda p, u: p + u, params, updates)
  h.assert_trees_equal(new["conv0"], params["conv0"])
  assert not np.allclose(new["classifier"]["kernel"], params["classifier"]["kernel"])


def test_keep_frozen_batch_stats():
  old = {"conv0": {"bn": {"mean": jnp.zeros(3)}}, "classifier": {"mean": jnp.zeros(2)}}
  new = jax.tree.map(lambda x: x + 1, old)
  frozen = h.config(**{"init_from.freeze_backbone": True})
  kept = jax.jit(lambda o, n: transfer.keep_frozen_batch_stats(frozen, o, n))(old, new)
  h.assert_trees_equal(kept["conv0"], old["conv0"])
  h.assert_trees_equal(kept["classifier"], new["classifier"])
  assert transfer.keep_frozen_batch_stats(h.config(), old, new) is new
