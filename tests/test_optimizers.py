"""The paper's optimizer, schedules and the weight-decay masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mobilenet_v1
from mobilenet_jax import models
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.train import optimizers
from tests import ckpt_helpers


def _config(**overrides):
  config = mobilenet_v1.get_config()
  config.weight_decay = 0.0
  return ckpt_helpers.override(config, **overrides)


def test_rmsprop_tf1_on_hand_checked_numbers():
  """TF1: ms starts at 1, eps inside the sqrt, lr inside the momentum accumulator."""
  config = _config(**{"lr.schedule": "constant", "lr.base": 0.1, "lr.reference_batch": 1024,
                      "optimizer.epsilon": 1.0})
  params = {"w": jnp.array([1.0, -2.0])}
  opt, _ = optimizers.create_optimizer(config, 100, 1000, params)
  state = opt.init(params)
  g1, g2 = jnp.array([0.5, 2.0]), jnp.array([-1.0, 0.0])
  u1, state = opt.update({"w": g1}, state, params)
  u2, state = opt.update({"w": g2}, state, params)
  # By hand: ms1 = 0.9*1 + 0.1*g1^2 = [0.925, 1.3]; mom1 = 0.1*g1/sqrt(ms1+1)
  ms1 = np.array([0.925, 1.3])
  mom1 = 0.1 * np.array([0.5, 2.0]) / np.sqrt(ms1 + 1.0)
  np.testing.assert_allclose(u1["w"], -mom1, rtol=1e-6)
  np.testing.assert_allclose(mom1, [0.0360375, 0.1318760], rtol=1e-5)
  ms2 = 0.9 * ms1 + 0.1 * np.array([1.0, 0.0])
  mom2 = 0.9 * mom1 + 0.1 * np.array([-1.0, 0.0]) / np.sqrt(ms2 + 1.0)
  np.testing.assert_allclose(u2["w"], -mom2, rtol=1e-6)


def test_learning_rate_scaling_warmup_and_staircase():
  config = _config(global_batch_size=512, **{
      "lr.base": 0.165, "lr.reference_batch": 256, "lr.warmup_epochs": 1.0,
      "lr.decay_epochs": 3.0, "lr.decay_rate": 0.94, "lr.min_ratio": 0.5})
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch=10, total_steps=1000)
  peak = 0.165 * 2
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(schedule(5), peak / 2, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), peak, rtol=1e-6)
  np.testing.assert_allclose(schedule(10 + 29), peak, rtol=1e-6)  # Staircase: flat.
  np.testing.assert_allclose(schedule(10 + 30), peak * 0.94, rtol=1e-6)
  np.testing.assert_allclose(schedule(10 + 900), peak * 0.5, rtol=1e-6)  # The floor.
  cosine = optimizers.learning_rate_schedule(
      _config(**{"lr.schedule": "cosine", "lr.min_ratio": 0.0}), 10, 100)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)


def test_weight_decay_mask_excludes_depthwise_batchnorm_and_biases():
  model = models.create(mobilenet_v1.get_config("width=0.25,num_classes=10").model)
  params = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))["params"]
  regular, depthwise = optimizers.weight_decay_masks(params)
  flat = {"/".join(str(k.key) for k in path): (r, d) for (path, r), d in zip(
      jax.tree_util.tree_leaves_with_path(regular), jax.tree.leaves(depthwise))}
  assert flat["conv0/conv/kernel"] == (True, False)
  assert flat["block1/pw/conv/kernel"] == (True, False)
  assert flat["classifier/kernel"] == (True, False)
  assert flat["block1/dw/depthwise/kernel"] == (False, True)
  assert flat["classifier/bias"] == (False, False)
  assert flat["block1/dw/bn/scale"] == (False, False)
  assert flat["conv0/bn/bias"] == (False, False)
  assert sum(d for _, d in flat.values()) == 13


def test_weight_decay_is_added_to_the_gradient_of_kernels_only():
  config = _config(weight_decay=0.1, **{"optimizer.name": "sgd", "optimizer.momentum": 0.0,
                                        "lr.schedule": "constant", "lr.base": 1.0,
                                        "lr.reference_batch": 1024,
                                        "depthwise_weight_decay_mult": 0.5})
  params = {"conv": {"kernel": jnp.ones(2)}, "dw": {"depthwise": {"kernel": jnp.ones(2)}},
            "bn": {"scale": jnp.ones(2)}}
  opt, _ = optimizers.create_optimizer(config, 10, 100, params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["dw"]["depthwise"]["kernel"], -0.05)
  np.testing.assert_allclose(updates["bn"]["scale"], 0.0)


@pytest.mark.parametrize("key,value", [("optimizer.name", "lamb"), ("lr.schedule", "linear")])
def test_unknown_names(key, value):
  with pytest.raises(ConfigError, match=key.split(".")[-1]):
    optimizers.create_optimizer(_config(**{key: value}), 10, 100, {"w": jnp.ones(1)})


def test_label_smoothing_matches_optax():
  from mobilenet_jax.train.step import cross_entropy
  logits = jnp.array([[2.0, 0.0, -1.0]])
  expected = optax.softmax_cross_entropy(logits, jnp.array([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]]))
  np.testing.assert_allclose(cross_entropy(logits, jnp.array([0]), 0.1), expected, rtol=1e-6)
