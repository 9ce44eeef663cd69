"""Staleness-aware learning rates (lr.staleness_scaling) against a hand computation.

A linear softmax classifier trained with plain SGD: the gradient of the mean
cross-entropy is X^T (softmax(X W) - Y) / n, written out in numpy, so two steps of
the emulated asynchronous update can be computed by hand, stale parameters included.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from mobilenet_jax.errors import ConfigError
from mobilenet_jax.train import async_emulation, optimizers, state as state_lib
from mobilenet_jax.train.step import make_train_step
from tests import ckpt_helpers as h

LR = 0.5


class Linear(nn.Module):
  """Logits = flattened image x W: no bias, no BatchNorm, no dropout."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(3, use_bias=False, name="classifier")(x.reshape(x.shape[0], -1))


def _config(scaling):
  return h.config(**{
      "optimizer.name": "sgd", "optimizer.momentum": 0.0, "weight_decay": 0.0,
      "label_smoothing": 0.0, "ema_decay": 0.0, "lr.schedule": "constant",
      "lr.warmup_epochs": 0.0, "lr.base": LR, "lr.reference_batch": 4,
      "global_batch_size": 4, "staleness": 2, "num_workers": 2,
      "worker_delays": "spread", "lr.staleness_scaling": scaling})


def _grad(w, x, y):
  """d mean-CE / dW for logits x @ w, by hand."""
  logits = x @ w
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  return x.T @ (p - np.eye(w.shape[1])[y]) / len(y)


def _train_two_steps(scaling, images, labels):
  cfg = _config(scaling)
  model = Linear()
  variables = model.init(jax.random.key(0), images[0], train=False)
  optimizer, schedule = optimizers.create_optimizer(cfg, 10, 10, variables["params"])
  state = state_lib.create_train_state(variables, optimizer, cfg.staleness,
                                       jax.random.key(1))
  w0 = np.asarray(variables["params"]["classifier"]["kernel"], np.float64)
  step = jax.jit(make_train_step(model, optimizer, cfg, schedule))
  for i in range(2):
    state, _ = step(state, {"image": images[i], "label": labels[i]})
  return w0, np.asarray(state.params["classifier"]["kernel"])


@pytest.mark.parametrize("scaling", ["none", "inverse"])
def test_two_async_steps_match_hand_computation(scaling):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 4, 2, 2, 1)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 4)).astype(np.int32)
  w0, w2 = _train_two_steps(scaling, images, labels)
  x = images.reshape(2, 4, -1).astype(np.float64)
  # "spread" delays over 2 workers with tau=2: worker 0 is current (d=0), worker 1
  # two steps late (d=2). Worker w takes examples w, w+2 (strided split). Before
  # step 2 there is no older version, so worker 1 reads the initial weights both times.
  weight = {"none": (1.0, 1.0), "inverse": (1.0, 0.5)}[scaling]  # lr / max(1, d)
  w = w0
  seen = [w0]
  for t in range(2):
    stale = seen[max(0, t - 2)]
    g0 = _grad(w, x[t, 0::2], labels[t, 0::2])
    g1 = _grad(stale, x[t, 1::2], labels[t, 1::2])
    w = w - LR * (weight[0] * g0 + weight[1] * g1) / 2
    seen.append(w)
  np.testing.assert_allclose(w2, w, rtol=1e-5, atol=1e-6)


def test_inverse_weights_and_unknown_scaling():
  weights = async_emulation.delay_weights("inverse", np.array([0, 1, 2, 4, 8]))
  np.testing.assert_allclose(weights, [1, 1, 0.5, 0.25, 0.125])
  assert async_emulation.delay_weights("none", np.array([0, 3])) is None
  # Checked once, by the static validation.
  from mobilenet_jax.train import validation  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="lr.staleness_scaling='linear'"):
    validation.validate(h.config(**{"lr.staleness_scaling": "linear"}))
