"""model.bn_momentum chosen from the run length, and the warning for a hand-set one."""

import logging

import pytest

from configs import default, mobilenet_v1, mobilenet_v2
from mobilenet_jax import models
from mobilenet_jax.train import batchnorm
from tests import ckpt_helpers as h


@pytest.mark.parametrize("name, steps, expected", [
    ("mobilenet_v1", 20, 0.9),  # Floor: at least ~10 batches.
    ("mobilenet_v1", 220, 0.9),
    ("mobilenet_v1", 3750, 1 - 40 / 3750),  # The default run: ~0.99, as hand-tuned.
    ("mobilenet_v1", 375_000, 0.9997),  # ImageNet, 300 epochs: TF-slim V1's decay.
    ("mobilenet_v2", 375_000, 0.997),  # TF-slim V2's.
])
def test_auto_momentum(name, steps, expected):
  assert batchnorm.auto_momentum(name, steps) == pytest.approx(expected)
  if steps >= 100:  # What is left of the initial statistics at the end is negligible.
    assert batchnorm.initial_share(batchnorm.auto_momentum(name, steps), steps) < 1e-4


def test_configs_leave_it_to_the_rule():
  for config in (default.get_config(), mobilenet_v1.get_config(),
                 mobilenet_v2.get_config()):
    assert config.model.bn_momentum is None
  # Without a training run (evaluation, costs, benchmarks) the reference value.
  assert models.create(default.get_config().model).ops.batch_norm.keywords[
      "momentum"] == 0.9997


def test_resolve_sets_a_copy_and_warns_for_a_long_horizon(caplog):
  config = default.get_config()
  config.lock()
  resolved = batchnorm.resolve_momentum(config, 220)
  assert resolved.model.bn_momentum == 0.9 and config.model.bn_momentum is None

  with caplog.at_level(logging.WARNING):
    fixed = h.override(default.get_config(), **{"model.bn_momentum": 0.99})
    assert batchnorm.resolve_momentum(fixed, 220) is fixed
  assert "bn_momentum=0.99" in caplog.text and "11%" in caplog.text

  caplog.clear()
  with caplog.at_level(logging.WARNING):
    batchnorm.resolve_momentum(fixed, 10_000)  # Horizon 100 of 10,000 steps: fine.
    frozen = h.override(default.get_config(), **{
        "model.bn_momentum": 0.9997, "init_from.freeze_backbone": True})
    batchnorm.resolve_momentum(frozen, 100)  # Frozen statistics never update.
  assert not caplog.text
